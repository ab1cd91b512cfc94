/* Whether this browser can draw WebGL2 (the splat and mesh viewers need it; the page falls back
   without it). */
export function webgl2() {
  try {
    return !!document.createElement("canvas").getContext("webgl2");
  } catch (error) {
    return false;
  }
}

/* The keys every viewer orbits and zooms with while it has the focus (the 2D viewer's too): arrows
   turn the camera about the object by `step` degrees (left/right: azimuth, up/down: elevation),
   + and - zoom. `orbit(dAzimuthDeg, dElevationDeg)` and `zoom(factor)` do the viewer's own move. */
export const ORBIT_KEYS = { ArrowLeft: [1, 0], ArrowRight: [-1, 0], ArrowUp: [0, 1], ArrowDown: [0, -1] };

export function orbitByKeyboard(canvas, orbit, zoom, step = 5) {
  canvas.addEventListener("keydown", (event) => {
    const move = ORBIT_KEYS[event.key];
    if (move) orbit(move[0] * step, move[1] * step);
    else if (event.key === "+" || event.key === "=") zoom(0.9);
    else if (event.key === "-") zoom(1 / 0.9);
    else return;
    event.preventDefault();
  });
}
