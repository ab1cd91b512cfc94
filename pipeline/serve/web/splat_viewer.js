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
  let scene = null, running = false;
  function frame() {
    if (!running) return;
    // The generated views' field of view (camera.DEFAULT_FOV_DEG), whatever size the canvas has.
    const focal = canvas.height / 2 / Math.tan((FOV_DEG * Math.PI) / 360);
    camera.data.fx = focal;
    camera.data.fy = focal;
    controls.update();
    renderer.render(scene, camera);
    requestAnimationFrame(frame);
  }
  return {
    load(buffer) {
      scene = new SPLAT.Scene();
      const splat = SPLAT.Loader.LoadFromArrayBuffer(buffer, scene);
      splat.rotation = SPLAT.Quaternion.FromEuler(new SPLAT.Vector3(Math.PI, 0, 0));
      splat.applyRotation();
      if (!running) {
        running = true;
        requestAnimationFrame(frame);
      }
      return splat.data.vertexCount;
    },
  };
}

window.VideoMVSplatViewer = { supported: webgl2(), create };
window.dispatchEvent(new Event("videomv-splat-viewer"));
