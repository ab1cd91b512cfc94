"""Ray Serve: the HTTP API, the CPU ingress, the model deployment, the app that wires them, media encoding, the client and the demo page."""
