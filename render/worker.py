"""Entry point of the isolated Blender process: ``python -m render.worker``.

Protocol (one JSON object per line): the parent writes requests to stdin, the worker answers on the
original stdout. Everything Blender itself prints is redirected to stderr, which the parent keeps in
a log, so it can never corrupt the protocol.

- At start the worker sends ``{"ready": true, "blender_version": "..."}``.
- Request: ``{"asset": path, "c2w": [[16 floats] x V], "settings": RenderSettings JSON,
  "output_dir": folder}``; or ``{"asset": path, "mesh": file.npz}``: the normalised object's
  triangles in the project world frame (``blender.export_world_mesh``), answered with their counts.
- Answer: ``{"ok": true, "outputs": {"views": [...], ...}, "device": "CPU"|"GPU", "seconds": s,
  "missing_textures": [references]}`` or
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


MEMORY_LIMIT_ENV = "VIDEOMV_BLENDER_MEMORY_LIMIT"  # bytes of heap the process may use (RLIMIT_DATA); unset: none


def _limit_memory() -> None:
    """RLIMIT_DATA, not RLIMIT_AS: CUDA and OptiX reserve tens of GB of address space they never
    touch, which an address-space limit would refuse; the data limit counts the heap, where a
    texture or geometry bomb lands. Over it an allocation fails: an image then does not decode
    (``blender.check_textures`` names the limit), other allocations end the process (the parent
    names the limit in the failure)."""
    import resource

    limit = int(os.environ.get(MEMORY_LIMIT_ENV) or 0)
    if limit > 0:
        resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))


def main() -> None:
    protocol = _protocol_stream()
    _limit_memory()
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
            missing = blender.check_textures(request["asset"])
            blender.normalise_scene()
            if "mesh" in request:
                answer = {"ok": True, "outputs": blender.export_world_mesh(request["mesh"])}
            else:
                settings = RenderSettings.from_json(request["settings"])
                if missing and settings.missing_textures == "fail":
                    raise blender.AssetError(f"{len(missing)} texture(s) missing: {', '.join(missing[:5])}")
                device = blender.configure_cycles(settings)
                c2w = np.asarray(request["c2w"], dtype=np.float64).reshape(-1, 4, 4)
                outputs = blender.render_orbit(c2w, settings, request["output_dir"])
                answer = {"ok": True, "outputs": outputs, "device": device, "missing_textures": missing}
        except blender.AssetError as error:
            answer = {"ok": False, "error": str(error)}
        except Exception as error:  # anything else is still this asset's failure, with its trace
            trace = traceback.format_exc(limit=3)
            answer = {"ok": False, "error": f"{type(error).__name__}: {error}\n{trace}"[-2000:]}
        answer["seconds"] = time.perf_counter() - start
        protocol.write(json.dumps(answer) + "\n")


if __name__ == "__main__":
    main()
