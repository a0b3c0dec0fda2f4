/* demo.js -- the demo article's "Copy link" button. */
document.getElementById('copy').addEventListener('click', function () {
  if (navigator.clipboard) navigator.clipboard.writeText(location.href).catch(function () {});
});
