// The demo's experience tree, shared by demo.js and the browser tests: a pasta in the basket
// recommends the basil sauce; from then on every event with a non-empty basket decides a tension
// cart (the `cart` node loops on itself), so each click shows an experience.
//
//   start ─┬─> pasta (basket_contains category pasta) -> product_recommendation RECOMMENDED ─> cart
//          └─> cart  (basket_value_at_least 1 cent)   -> tension_cart THRESHOLD_CENTS / REWARD_CENTS ─> cart

/** The tree's id (part of every decision_id it makes). */
export const TREE_ID = 'storefront-demo'
/** The product the `pasta` node recommends (in catalog.json). */
export const RECOMMENDED = 'sf-sauce-basil'
/** The tension cart's basket value to reach, and its reward, in cents. */
export const THRESHOLD_CENTS = 2000
export const REWARD_CENTS = 300

/** The tree of `retailerId`'s shopper `shopperId`, as `basketflow trees publish` takes it. */
export function demoTree (retailerId, shopperId) {
  return {
    tree_id: TREE_ID,
    version: 1,
    retailer_id: retailerId,
    shopper_id: shopperId,
    root: 'start',
    nodes: [
      { id: 'start', children: ['pasta', 'cart'] },
      {
        id: 'pasta',
        conditions: [{ basket_contains: { category: 'pasta' } }],
        experience: { kind: 'product_recommendation', params: { product_id: RECOMMENDED } },
        children: ['cart']
      },
      {
        id: 'cart',
        conditions: [{ basket_value_at_least: { cents: 1 } }],
        experience: { kind: 'tension_cart', params: { threshold_cents: THRESHOLD_CENTS, reward_cents: REWARD_CENTS } },
        children: ['cart']
      }
    ]
  }
}
