"""Entry point of the isolated Blender process: ``python -m render.worker``.

Protocol (one JSON object per line): the parent writes requests to stdin, the worker answers on the
original stdout. Everything Blender itself prints is redirected to stderr, which the parent keeps in
a log, so it can never corrupt the protocol.

- At start the worker sends ``{"ready": true, "blender_version": "..."}``.
- Request: ``{"asset": path, "c2w": [[16 floats] x V], "settings": RenderSettings JSON,
  "output_dir": folder}``; or ``{"asset": path, "mesh": file.npz}``: the normalised object's
  triangles in the project world frame (``blender.export_world_mesh``), answered with their counts.
- Answer: ``{"ok": true, "outputs": {"views": [...], ...}, "device": "CPU"|"GPU", "seconds": s}`` or
  ``{"ok": false, "error": "..."}`` for an asset that cannot be rendered. A crash or hang is the
  parent's to detect (see ``render.process``).
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback


def _protocol_stream():
    """Keep the real stdout for the protocol and send fd 1 (Blender's prints) to stderr."""
    protocol = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return protocol


def main() -> None:
    protocol = _protocol_stream()
    import numpy as np

    from render import blender
    from render.settings import RenderSettings

    protocol.write(json.dumps({"ready": True, "blender_version": blender.blender_version()}) + "\n")
    for line in sys.stdin:
        if not line.strip():
            continue
        start = time.perf_counter()
        try:
            request = json.loads(line)
            blender.reset_scene()
            blender.import_asset(request["asset"])
            blender.normalise_scene()
            if "mesh" in request:
                answer = {"ok": True, "outputs": blender.export_world_mesh(request["mesh"])}
            else:
                settings = RenderSettings.from_json(request["settings"])
                device = blender.configure_cycles(settings)
                c2w = np.asarray(request["c2w"], dtype=np.float64).reshape(-1, 4, 4)
                outputs = blender.render_orbit(c2w, settings, request["output_dir"])
                answer = {"ok": True, "outputs": outputs, "device": device}
        except blender.AssetError as error:
            answer = {"ok": False, "error": str(error)}
        except Exception as error:  # anything else is still this asset's failure, with its trace
            trace = traceback.format_exc(limit=3)
            answer = {"ok": False, "error": f"{type(error).__name__}: {error}\n{trace}"[-2000:]}
        answer["seconds"] = time.perf_counter() - start
        protocol.write(json.dumps(answer) + "\n")


if __name__ == "__main__":
    main()
