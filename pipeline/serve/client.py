"""A small client of the Serve endpoint: request views and write them to a folder."""

from __future__ import annotations

import base64
import os
from typing import Any

import requests

# Output name in the Serve API -> its file name in a result folder or zip (besides views/view_XXX.png).
RESULT_FILES = {"input": "input.png", "ply": "gaussians.ply", "splat": "gaussians.splat", "glb": "mesh.glb", "grid": "grid.png", "gif": "orbit.gif", "mp4": "orbit.mp4",
                "gaussians_mp4": "gaussians_orbit.mp4"}


class EndpointError(RuntimeError):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"{status}: {detail}")
        self.status = status
        self.detail = detail


def generate(url: str, request: dict[str, Any], timeout: float = 900.0) -> dict[str, Any]:
    """POST ``request`` to ``{url}/v1/generate``; raises ``EndpointError`` with the server's message."""
    response = requests.post(f"{url.rstrip('/')}/v1/generate", json=request, timeout=timeout)
    if response.status_code != 200:
        try:
            detail = response.json().get("detail", response.text)
        except ValueError:
            detail = response.text
        raise EndpointError(response.status_code, str(detail))
    return response.json()


def write_result(body: dict[str, Any], out: str) -> list[str]:
    """Write views/view_XXX.png and the files of ``RESULT_FILES`` (input.png: the image as the
    model saw it, grid.png, orbit.gif, orbit.mp4, gaussians.ply, gaussians.splat, mesh.glb, gaussians_orbit.mp4)
    that the answer has; returns their paths."""
    written = []
    if "views" in body:
        os.makedirs(os.path.join(out, "views"), exist_ok=True)
        for index, view in enumerate(body["views"]):
            path = os.path.join(out, "views", f"view_{index:03d}.png")
            with open(path, "wb") as handle:
                handle.write(base64.b64decode(view))
            written.append(path)
    for key, name in RESULT_FILES.items():
        if key in body:
            os.makedirs(out, exist_ok=True)
            path = os.path.join(out, name)
            with open(path, "wb") as handle:
                handle.write(base64.b64decode(body[key]))
            written.append(path)
    return written
