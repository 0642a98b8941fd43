// The back office: marks the payment's state diagram (Pages.diagram) from its data attributes.
(function () {
  'use strict';
  const holder = document.getElementById('diagram');
  if (!holder) return;
  const list = (value) => (value ? value.split(',') : []);
  Pages.diagram(holder.querySelector('svg'), {
    current: holder.dataset.current,
    visited: list(holder.dataset.visited),
    taken: list(holder.dataset.taken).map((move) => move.split('>')),
  });
})();
