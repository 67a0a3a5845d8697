// Offline shim for the Jupyter widget manager (ours, not vendored; loaded first through nb_ipywidgets_js).
//
// 1) html-manager finds its Font Awesome files relative to the RequireJS module URL, which is
//    page-relative by default and 404s under file://. A global `require` object that exists before
//    require.js loads is read by RequireJS as its configuration, so map the module folder to this file's folder.
var __hm_dir = document.currentScript.src.replace(/\?.*$/, "").replace(/\/[^/]*$/, "");
window.__jupyter_widgets_assets_path__ = __hm_dir + "/";
var require = { paths: { "@jupyter-widgets/html-manager/dist": __hm_dir } };

// 2) html-manager typesets widget labels with the MathJax 2 API (MathJax.Hub.Queue), while the book
//    ships MathJax 3: map that one call onto MathJax 3's typesetPromise.
document.addEventListener("DOMContentLoaded", function () {
  var MJ = window.MathJax;
  if (!MJ || MJ.Hub) return;
  MJ.Hub = {
    Queue: function (job) {
      var el = job && job[2];
      var run = function () { return MJ.typesetPromise ? MJ.typesetPromise(el ? [el] : undefined) : null; };
      (MJ.startup && MJ.startup.promise ? MJ.startup.promise.then(run) : Promise.resolve().then(run))
        .catch(function (e) { console.warn("MathJax typeset in widget failed", e); });
    },
  };
});
