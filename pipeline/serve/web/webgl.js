/* Whether this browser can draw WebGL2 (the splat and mesh viewers need it; the page falls back
   without it). */
export function webgl2() {
  try {
    return !!document.createElement("canvas").getContext("webgl2");
  } catch (error) {
    return false;
  }
}
