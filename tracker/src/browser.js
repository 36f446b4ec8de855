// The tracker for a page: `<script type="module" src=".../basketflow.js">` (the minified build of
// this file) attaches `window.basketflow`; `basketflow.init(config)` returns a tracker that hands
// its queue to navigator.sendBeacon when the page is hidden or unloading.
import { createTracker, EVENT_TYPES } from './tracker.js'

/** A tracker (see createTracker) wired to the page's visibility. */
export function init (config) {
  const tracker = createTracker(config)
  const away = () => tracker.flush({ beacon: true })
  addEventListener('pagehide', away)
  document.addEventListener('visibilitychange', () => {
    if (document.visibilityState === 'hidden') away()
  })
  return tracker
}

export { createTracker, EVENT_TYPES }

window.basketflow = { init, createTracker, EVENT_TYPES }
