/* A small viewer of 3D Gaussian Splatting PLY files (the project's export, models/gaussians/ply.py), drawn
   on a 2D canvas: each Gaussian is an isotropic disc of its mean scale, colour and opacity, drawn
   back to front (an approximate preview, not the renderer's exact anisotropic splats). It starts
   at the first view's camera (azimuth 0, looking at the origin). Orbit by
   dragging or with the arrow keys, zoom with the wheel, a pinch or +/-.
   VideoMVViewer.create(canvas) -> {load(arrayBuffer) -> count, draw()}. World: Y up (camera module). */
(function (global) {
  "use strict";
  const SH_C0 = 0.28209479177387814;
  const MAX_SPLATS = 40000;
  const FOV_DEG = 39.6;

  function parsePly(buffer) {
    const bytes = new Uint8Array(buffer);
    const marker = new TextEncoder().encode("end_header\n");
    let end = -1;
    for (let i = 0; i + marker.length <= Math.min(bytes.length, 65536); i++) {
      let match = true;
      for (let k = 0; k < marker.length && match; k++) match = bytes[i + k] === marker[k];
      if (match) { end = i + marker.length; break; }
    }
    if (end < 0) throw new Error("not a PLY file (no end_header)");
    const lines = new TextDecoder().decode(bytes.subarray(0, end)).split("\n");
    if (lines[0] !== "ply" || !lines.includes("format binary_little_endian 1.0")) {
      throw new Error("not a binary little-endian PLY file");
    }
    let count = 0;
    const names = [];
    for (const line of lines) {
      const words = line.trim().split(/\s+/);
      if (words[0] === "element" && words[1] === "vertex") count = parseInt(words[2], 10);
      if (words[0] === "property") {
        if (words[1] !== "float") throw new Error("only float properties are read, got " + words[1]);
        names.push(words[2]);
      }
    }
    for (const name of ["x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity", "scale_0", "scale_1", "scale_2"]) {
      if (!names.includes(name)) throw new Error("PLY has no " + name + " property");
    }
    const view = new DataView(buffer, end);
    const stride = names.length * 4;
    if (view.byteLength < count * stride) throw new Error("PLY is truncated");
    const at = Object.fromEntries(names.map((name, index) => [name, index * 4]));
    const splats = [];
    for (let i = 0; i < count; i++) {
      const base = i * stride;
      const get = (name) => view.getFloat32(base + at[name], true);
      const alpha = 1 / (1 + Math.exp(-get("opacity")));
      if (alpha < 0.02) continue;
      const colour = [0, 1, 2].map((c) => Math.round(255 * Math.min(1, Math.max(0, 0.5 + SH_C0 * get("f_dc_" + c)))));
      const sigma = Math.exp((get("scale_0") + get("scale_1") + get("scale_2")) / 3);
      splats.push({ x: get("x"), y: get("y"), z: get("z"), alpha, sigma, fill: `rgb(${colour.join(",")})` });
    }
    splats.sort((a, b) => b.alpha - a.alpha);
    return splats.slice(0, MAX_SPLATS);
  }

  function create(canvas) {
    const context = canvas.getContext("2d");
    const state = { splats: [], azimuth: 0, elevation: 15, distance: 2, centre: [0, 0, 0], pointers: new Map(),
                    pending: false };

    function draw() {
      state.pending = false;
      const { width, height } = canvas;
      context.fillStyle = "#808080";
      context.fillRect(0, 0, width, height);
      const a = state.azimuth * Math.PI / 180, e = state.elevation * Math.PI / 180;
      // Camera on the orbit (the camera module's convention: azimuth about +Y from +Z), looking at the centre.
      const eye = [Math.cos(e) * Math.sin(a), Math.sin(e), Math.cos(e) * Math.cos(a)].map((v) => v * state.distance);
      const forward = eye.map((v) => -v / state.distance);
      let right = [forward[2], 0, -forward[0]];
      const norm = Math.hypot(right[0], right[2]) || 1;
      right = right.map((v) => -v / norm);
      const up = [right[1] * forward[2] - right[2] * forward[1], right[2] * forward[0] - right[0] * forward[2],
                  right[0] * forward[1] - right[1] * forward[0]];
      const focal = 0.5 * height / Math.tan(FOV_DEG * Math.PI / 360);
      const projected = [];
      for (const s of state.splats) {
        const p = [s.x - state.centre[0] - eye[0], s.y - state.centre[1] - eye[1], s.z - state.centre[2] - eye[2]];
        const depth = p[0] * forward[0] + p[1] * forward[1] + p[2] * forward[2];
        if (depth < 0.05) continue;
        const u = width / 2 + focal * (p[0] * right[0] + p[1] * right[1] + p[2] * right[2]) / depth;
        const v = height / 2 - focal * (p[0] * up[0] + p[1] * up[1] + p[2] * up[2]) / depth;
        projected.push({ u, v, depth, radius: Math.max(0.7, focal * s.sigma / depth), s });
      }
      projected.sort((p, q) => q.depth - p.depth);
      for (const p of projected) {
        context.globalAlpha = p.s.alpha;
        context.fillStyle = p.s.fill;
        context.beginPath();
        context.arc(p.u, p.v, p.radius, 0, 2 * Math.PI);
        context.fill();
      }
      context.globalAlpha = 1;
    }

    function request() {
      if (!state.pending) { state.pending = true; requestAnimationFrame(draw); }
    }
    function orbit(dAzimuth, dElevation) {
      state.azimuth = (state.azimuth + dAzimuth) % 360;
      state.elevation = Math.max(-89, Math.min(89, state.elevation + dElevation));
      request();
    }
    function zoom(factor) {
      state.distance = Math.max(0.3, Math.min(20, state.distance * factor));
      request();
    }

    canvas.addEventListener("pointerdown", (event) => {
      canvas.setPointerCapture(event.pointerId);
      state.pointers.set(event.pointerId, { x: event.clientX, y: event.clientY });
    });
    canvas.addEventListener("pointermove", (event) => {
      const previous = state.pointers.get(event.pointerId);
      if (!previous) return;
      if (state.pointers.size === 2) {  // pinch: zoom by the change in finger distance
        const [first, second] = [...state.pointers.entries()];
        const other = first[0] === event.pointerId ? second[1] : first[1];
        const before = Math.hypot(previous.x - other.x, previous.y - other.y);
        const after = Math.hypot(event.clientX - other.x, event.clientY - other.y);
        if (before > 0 && after > 0) zoom(before / after);
      } else {
        orbit(-(event.clientX - previous.x) * 0.5, (event.clientY - previous.y) * 0.5);
      }
      state.pointers.set(event.pointerId, { x: event.clientX, y: event.clientY });
    });
    const release = (event) => state.pointers.delete(event.pointerId);
    canvas.addEventListener("pointerup", release);
    canvas.addEventListener("pointercancel", release);
    canvas.addEventListener("wheel", (event) => { event.preventDefault(); zoom(Math.exp(event.deltaY * 0.001)); },
                            { passive: false });
    canvas.addEventListener("keydown", (event) => {
      const moves = { ArrowLeft: [5, 0], ArrowRight: [-5, 0], ArrowUp: [0, 5], ArrowDown: [0, -5] };
      if (moves[event.key]) { orbit(...moves[event.key]); event.preventDefault(); }
      else if (event.key === "+" || event.key === "=") { zoom(0.9); event.preventDefault(); }
      else if (event.key === "-") { zoom(1 / 0.9); event.preventDefault(); }
    });

    return {
      load(buffer, options = {}) {
        state.splats = parsePly(buffer);
        state.centre = [0, 0, 0];  // where the orbit cameras look: the first view matches view 1
        state.azimuth = 0;
        state.elevation = options.elevation ?? 15;
        state.distance = options.distance ?? 2;
        draw();
        return state.splats.length;
      },
      draw,
    };
  }
  global.VideoMVViewer = { create, parsePly };
})(window);
