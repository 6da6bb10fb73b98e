// Settings of the MathJax 2.7 that the site serves itself (docs/hooks/mathjax.py): TeX in the
// \( \) and \[ \] delimiters that pymdownx.arithmatex (generic mode) writes, inside its
// `arithmatex` elements only, drawn with the bundled STIX-Web fonts.
window.MathJax = {
  tex2jax: { inlineMath: [["\\(", "\\)"]], displayMath: [["\\[", "\\]"]], processEscapes: true,
             ignoreClass: ".*", processClass: "arithmatex" },
  "HTML-CSS": { availableFonts: [], preferredFont: null, webFont: "STIX-Web", imageFont: null },
  messageStyle: "none",
  menuSettings: { zoom: "None" },
};
// Material's instant navigation swaps pages without reloading: typeset each new page.
document$.subscribe(() => { if (window.MathJax && MathJax.Hub) { MathJax.Hub.Queue(["Typeset", MathJax.Hub]); } });
