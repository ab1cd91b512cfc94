/* The VideoMV demo page over the Serve API (pipeline/serve/serving.py): GET v1/health, POST v1/generate,
   POST v1/requests (the id GET v1/progress/{request_id} follows). Every path is relative, so the page works under any route prefix. */
(function () {
  "use strict";
  const $ = (id) => document.getElementById(id);
  const viewer = VideoMVViewer.create($("viewer"));
  let info = null, frames = [], frame = 0, timer = null, links = [], splatViewer = null, meshViewer = null;

  function showError(message) {
    $("error").textContent = message;
    $("error").hidden = false;
  }
  function clearError() {
    $("error").hidden = true;
    $("error").textContent = "";
  }
  function describe(detail) {
    if (typeof detail === "string") return detail;
    if (Array.isArray(detail)) return detail.map((d) => `${(d.loc || []).slice(1).join(".")}: ${d.msg}`).join("; ");
    return JSON.stringify(detail);
  }
  function bytesOf(base64) {
    const text = atob(base64), bytes = new Uint8Array(text.length);
    for (let i = 0; i < text.length; i++) bytes[i] = text.charCodeAt(i);
    return bytes;
  }

  async function loadInfo() {
    try {
      const response = await fetch("v1/health");
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      info = await response.json();
    } catch (error) {
      showError(`Cannot reach the model: ${error.message}`);
      return;
    }
    const text = info.variant === "t2v";
    $("prompt-field").hidden = !text;
    $("image-field").hidden = text;
    const cameras = info.training_cameras;
    if (cameras && cameras.elevation) {
      $("elevation").min = cameras.elevation[0];
      $("elevation").max = cameras.elevation[1];
    }
    if (!info.reconstructor) {
      $("three-d-aware").checked = false;
      $("three-d-aware").disabled = true;
    }
    $("model-info").textContent = `${text ? "Text" : "Image"}-to-multi-view model: ${info.frames} views of ` +
      `${info.resolution} px` + (info.reconstructor ? ", with a reconstructor (3D Gaussians)" : "") +
      (cameras && cameras.elevation ? `; trained at elevations ${cameras.elevation[0]} to ${cameras.elevation[1]} degrees` : "");
  }

  async function followProgress(id, stop) {
    const bar = $("progress"), label = $("progress-text");
    while (!stop.done) {
      try {
        const response = await fetch(`v1/progress/${id}`);
        const progress = response.ok ? await response.json() : null;
        if (progress && progress.total && !stop.done) {
          bar.max = progress.total;
          bar.value = progress.done;
          label.textContent = `${progress.done} of ${progress.total} steps`;
        }
      } catch (error) { /* the answer to the generation itself reports failures */ }
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
  }

  function showView(index) {
    frame = (index + frames.length) % frames.length;
    $("orbit").src = frames[frame];
    $("orbit").alt = `generated view ${frame + 1} of ${frames.length}`;
    $("view-slider").value = frame;
    $("view-number").textContent = frame + 1;
  }
  function play(on) {
    clearInterval(timer);
    timer = on ? setInterval(() => showView(frame + 1), 120) : null;
    $("play").textContent = on ? "Pause" : "Play";
    $("play").setAttribute("aria-pressed", String(on));
  }

  function addDownload(name, blob, label) {
    const url = URL.createObjectURL(blob);
    links.push(url);
    const item = document.createElement("li"), link = document.createElement("a");
    link.href = url;
    link.download = name;
    link.textContent = label;
    item.appendChild(link);
    $("downloads").appendChild(item);
  }

  function show(answer) {
    links.forEach((url) => URL.revokeObjectURL(url));
    links = [];
    $("downloads").replaceChildren();
    frames = answer.views.map((view) => `data:image/png;base64,${view}`);
    $("input-panel").hidden = !answer.input;
    if (answer.input) $("input-image").src = `data:image/png;base64,${answer.input}`;
    $("view-slider").max = frames.length - 1;
    $("result").hidden = false;
    showView(0);
    play(true);
    const views = answer.views.map((view, index) => ({ name: `views/view_${String(index).padStart(3, "0")}.png`,
                                                       bytes: bytesOf(view) }));
    const elevation = Number($("elevation").value) || 15;
    const webgl = window.VideoMVSplatViewer;  // splat_viewer.js, where the browser has WebGL2
    if (answer.splat && webgl && webgl.supported) {
      // Shown first: the renderer sizes its drawing buffer from the canvas's laid-out size.
      $("viewer-panel").hidden = false;
      $("splat-viewer").hidden = false;
      $("viewer").hidden = true;
      splatViewer = splatViewer || webgl.create($("splat-viewer"), { elevation });
      const count = splatViewer.load(bytesOf(answer.splat).buffer);
      $("viewer-info").textContent = `${count} Gaussians, drawn as splats (WebGL).`;
    } else if (answer.ply) {
      const count = viewer.load(bytesOf(answer.ply).buffer, { elevation });
      $("viewer-info").textContent = `${count} Gaussians, each drawn as a disc (this browser has no WebGL2; ` +
                                     "the PLY has the full splats).";
      $("splat-viewer").hidden = true;
      $("viewer").hidden = false;
      $("viewer-panel").hidden = false;
    } else {
      $("viewer-panel").hidden = true;
    }
    if (answer.ply) addDownload("gaussians.ply", new Blob([bytesOf(answer.ply)]), "Gaussians (PLY)");
    if (answer.splat) addDownload("gaussians.splat", new Blob([bytesOf(answer.splat)]), "Gaussians (.splat, for web viewers)");
    const meshes = window.VideoMVMeshViewer;  // mesh_viewer.js, where the browser has WebGL2
    $("mesh-panel").hidden = !(answer.glb && meshes && meshes.supported);
    if (answer.glb) {
      const glb = bytesOf(answer.glb);
      if (meshes && meshes.supported) {
        meshViewer = meshViewer || meshes.create($("mesh-viewer"), { elevation });
        meshViewer.load(glb.buffer.slice(0))
          .then((faces) => { $("mesh-info").textContent = `${faces} triangles, textured from the 24 views.`; })
          .catch((error) => { $("mesh-info").textContent = `The mesh could not be shown: ${error}`; });
      }
      addDownload("mesh.glb", new Blob([glb], { type: "model/gltf-binary" }), "Textured mesh (GLB)");
    }
    if (answer.unavailable) {
      showError(Object.entries(answer.unavailable).map(([name, why]) => `No ${name}: ${why}`).join(" "));
    }
    if (answer.gif) addDownload("orbit.gif", new Blob([bytesOf(answer.gif)], { type: "image/gif" }), "Orbit (GIF)");
    if (answer.mp4) addDownload("orbit.mp4", new Blob([bytesOf(answer.mp4)], { type: "video/mp4" }), "Orbit (MP4)");
    if (answer.gaussians_mp4) {
      addDownload("gaussians_orbit.mp4", new Blob([bytesOf(answer.gaussians_mp4)], { type: "video/mp4" }),
                  "The Gaussians' orbit (MP4)");
    }
    addDownload("views.zip", VideoMVZip.build(views), "The 24 views (ZIP of PNGs)");
  }

  async function generate(event) {
    event.preventDefault();
    clearError();
    if (!info) { showError("The model's information is not loaded yet."); return; }
    const outputs = ["views", "gif", "mp4"].concat(info.reconstructor ? ["ply", "splat", "glb", "gaussians_mp4"] : []);
    const fields = { seed: Number($("seed").value), steps: Number($("steps").value),
                     three_d_aware: $("three-d-aware").checked, outputs };
    if ($("elevation").value !== "") fields.elevation = Number($("elevation").value);
    if ($("guidance").value !== "") fields.guidance_scale = Number($("guidance").value);
    let request;
    if (info.variant === "t2v") {
      fields.prompt = $("prompt").value;
      request = { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(fields) };
    } else {
      const file = $("image").files[0];
      if (!file) { showError("Choose an image first."); return; }
      const form = new FormData();
      form.append("image", file);
      form.append("params", JSON.stringify(fields));
      request = { method: "POST", body: form };
    }
    $("generate").disabled = true;
    $("progress-area").hidden = false;
    $("progress").value = 0;
    $("progress-text").textContent = "waiting for the model";
    const stop = { done: false };
    try {
      // The server makes the request's id (unguessable, one use): only this page can follow it.
      const issued = await fetch("v1/requests", { method: "POST" });
      if (issued.ok) {
        const id = (await issued.json()).request_id;
        fields.request_id = id;
        if (request.body instanceof FormData) request.body.set("params", JSON.stringify(fields));
        else request.body = JSON.stringify(fields);
        followProgress(id, stop);
      }
      const response = await fetch("v1/generate", request);
      const answer = await response.json().catch(() => ({ detail: response.statusText }));
      if (!response.ok) {
        showError(`The server refused the request (HTTP ${response.status}): ${describe(answer.detail)}`);
        return;
      }
      show(answer);
    } catch (error) {
      showError(`The request failed: ${error.message}`);
    } finally {
      stop.done = true;
      $("generate").disabled = false;
      $("progress-area").hidden = true;
    }
  }

  $("form").addEventListener("submit", generate);
  $("view-slider").addEventListener("input", (event) => { play(false); showView(Number(event.target.value)); });
  $("play").addEventListener("click", () => play(timer === null));
  loadInfo();
})();
