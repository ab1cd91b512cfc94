/* The viewer of the mesh: the answer's GLB (models/mesh/, a texture baked from the generated views)
   drawn by the vendored three.js (vendor/three, MIT) with its glTF loader and orbit controls. The
   texture already holds the views' shading, so it is drawn unlit. glTF is Y-up like the project's
   world: the camera starts at the front (azimuth 0) at the generation's elevation; it orbits by
   mouse, touch and, while the viewer has the focus, keyboard (webgl.js). Offered only
   where the browser has WebGL2; otherwise the mesh stays a download. */
import { orbitByKeyboard, webgl2 } from "./webgl.js";
import * as THREE from "three";
import { GLTFLoader } from "./vendor/three/examples/jsm/loaders/GLTFLoader.js";
import { OrbitControls } from "./vendor/three/examples/jsm/controls/OrbitControls.js";

const FOV_DEG = 39.6;  // the generated views' (camera.DEFAULT_FOV_DEG)

function create(canvas, { elevation = 15, distance = 2.2 } = {}) {
  const renderer = new THREE.WebGLRenderer({ canvas, antialias: true });
  renderer.setPixelRatio(window.devicePixelRatio || 1);
  const scene = new THREE.Scene();
  scene.background = new THREE.Color(0x808080);
  const camera = new THREE.PerspectiveCamera(FOV_DEG, 1, 0.05, 50);
  const angle = (elevation * Math.PI) / 180;
  camera.position.set(0, distance * Math.sin(angle), distance * Math.cos(angle));
  const controls = new OrbitControls(camera, canvas);
  // Drawn on demand (three.js's pattern without damping): a still mesh costs nothing, which matters
  // on software WebGL and on a battery.
  let model = null, pending = false;
  function draw() {
    pending = false;
    const width = canvas.clientWidth, height = canvas.clientHeight;
    if (width && height && (canvas.width !== Math.round(width * renderer.getPixelRatio()))) {
      renderer.setSize(width, height, false);
      camera.aspect = width / height;
      camera.updateProjectionMatrix();
    }
    renderer.render(scene, camera);
  }
  function requestDraw() {
    if (!pending) {
      pending = true;
      requestAnimationFrame(draw);
    }
  }
  controls.addEventListener("change", requestDraw);
  new ResizeObserver(requestDraw).observe(canvas);
  orbitByKeyboard(canvas, (dAzimuth, dElevation) => {
    const offset = camera.position.clone().sub(controls.target);
    const spherical = new THREE.Spherical().setFromVector3(offset);
    spherical.theta += (dAzimuth * Math.PI) / 180;
    spherical.phi = Math.min(Math.max(spherical.phi - (dElevation * Math.PI) / 180, 0.01), Math.PI - 0.01);
    camera.position.copy(controls.target).add(offset.setFromSpherical(spherical));
    controls.update();
  }, (factor) => {
    camera.position.sub(controls.target).multiplyScalar(factor).add(controls.target);
    controls.update();
  });
  return {
    load(buffer) {
      return new Promise((resolve, reject) => {
        new GLTFLoader().parse(buffer, "", (gltf) => {
          if (model) scene.remove(model);
          model = gltf.scene;
          let faces = 0;
          model.traverse((object) => {
            if (!object.isMesh) return;
            const colours = !!object.geometry.attributes.color;
            object.material = new THREE.MeshBasicMaterial({ map: object.material.map || null, vertexColors: colours });
            const geometry = object.geometry;
            faces += (geometry.index ? geometry.index.count : geometry.attributes.position.count) / 3;
          });
          scene.add(model);
          requestDraw();
          resolve(faces);
        }, reject);
      });
    },
  };
}

window.VideoMVMeshViewer = { supported: webgl2(), create };
