/* The WebGL viewer of the Gaussians: the vendored gsplat.js (vendor/gsplat, MIT) drawing the answer's
   .splat bytes with full anisotropic splats, orbit controls by mouse, touch and, while the viewer
   has the focus, keyboard (arrows orbit, + and - zoom: webgl.js; gsplat.js's own keys, which
   listen on the whole window and would pan the scene while a prompt is typed, are off). Where the
   browser has no WebGL2 it is not offered, and the page keeps its 2D canvas (viewer.js).
   The .splat file is in the project's world frame (Y up, +Z towards the front camera); gsplat.js
   draws in OpenCV's (Y down, the camera looking along +Z), so the scene is turned half round X. */
import { orbitByKeyboard, webgl2 } from "./webgl.js";
import * as SPLAT from "./vendor/gsplat/gsplat.es.js";

const FOV_DEG = 39.6;

function create(canvas, { elevation = 15, distance = 2.2 } = {}) {
  const renderer = new SPLAT.WebGLRenderer(canvas);
  const camera = new SPLAT.Camera();
  // From the front (azimuth 0) at the generation's elevation, a little further than the orbit.
  const controls = new SPLAT.OrbitControls(camera, canvas, 0, (elevation * Math.PI) / 180, distance, false);
  // The easing advances per drawn frame (gsplat.js's 0.12 would take ~80 frames to settle, seconds on
  // software WebGL): 0.3 settles in ~30 and still glides.
  controls.dampening = 0.3;
  // gsplat.js turns a drag of dx pixels into an azimuth change of dx * 0.003 rad (orbitSpeed 1) and
  // a wheel step into a zoom: the keys drive the same handlers, so they move as the mouse does.
  const drag = (dx, dy) => {
    canvas.dispatchEvent(new MouseEvent("mousedown", { clientX: 0, clientY: 0, button: 0 }));
    canvas.dispatchEvent(new MouseEvent("mousemove", { clientX: dx, clientY: dy }));
    window.dispatchEvent(new MouseEvent("mouseup", {}));
  };
  const pixelsPerDegree = Math.PI / 180 / 0.003;
  orbitByKeyboard(canvas, (dAzimuth, dElevation) => drag(-dAzimuth * pixelsPerDegree, dElevation * pixelsPerDegree),
                  (factor) => canvas.dispatchEvent(new WheelEvent("wheel", { deltaY: factor < 1 ? -40 : 40 })));
  // Drawn on demand, not every animation frame: software WebGL (or a laptop's battery) would spend a
  // core on a still picture. Input wakes the loop; it runs while the eased camera still moves (the
  // easing only approaches its target, so "still" is a change below STILL_EPSILON) and for STILL_MS
  // more, which lets the worker's depth sort for the last view arrive.
  const STILL_MS = 500, STILL_EPSILON = 1e-5;
  let scene = null, running = false, lastView = [], stillSince = 0;
  function frame(now) {
    // The generated views' field of view (camera.DEFAULT_FOV_DEG), whatever size the canvas has.
    const focal = canvas.height / 2 / Math.tan((FOV_DEG * Math.PI) / 360);
    camera.data.fx = focal;
    camera.data.fy = focal;
    controls.update();
    renderer.render(scene, camera);
    const { position: p, rotation: r } = camera;
    const view = [p.x, p.y, p.z, r.x, r.y, r.z, r.w, canvas.width, canvas.height];
    if (view.some((value, index) => !(Math.abs(value - lastView[index]) < STILL_EPSILON))) {
      lastView = view;
      stillSince = now;
    }
    running = now - stillSince < STILL_MS;
    if (running) requestAnimationFrame(frame);
  }
  function wake() {
    stillSince = performance.now();
    if (scene && !running) {
      running = true;
      requestAnimationFrame(frame);
    }
  }
  for (const type of ["mousedown", "mousemove", "wheel", "touchstart", "touchmove", "keydown"]) {
    canvas.addEventListener(type, wake, { passive: true });
  }
  window.addEventListener("mouseup", wake);
  new ResizeObserver(wake).observe(canvas);
  return {
    load(buffer) {
      scene = new SPLAT.Scene();
      const splat = SPLAT.Loader.LoadFromArrayBuffer(buffer, scene);
      splat.rotation = SPLAT.Quaternion.FromEuler(new SPLAT.Vector3(Math.PI, 0, 0));
      splat.applyRotation();
      wake();
      return splat.data.vertexCount;
    },
  };
}

window.VideoMVSplatViewer = { supported: webgl2(), create };
window.dispatchEvent(new Event("videomv-splat-viewer"));
