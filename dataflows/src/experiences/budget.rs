//! Campaign budgets: decisions that would be shown spend their campaign's budget at their
//! retailer, exactly, the same on every cluster shape.
//!
//! A decision of a tree with [`ExperienceTree::budget_cents`](basketflow_vocab::ExperienceTree)
//! that is neither held out nor capped and costs something
//! ([`Decision::cost_cents`]) is a claim on the budget of `(retailer, campaign)` (the
//! campaign is the tree id). Claims are exchanged by that key to one worker, which takes the
//! complete times in order and, within a time, the claims in `decision_id` order (the set of
//! decisions at a time is the same on 1 worker and on any cluster: the input is reclocked by
//! the log, and the tree operator is deterministic). A claim is allowed while `spent + cost
//! <= budget`; the first that does not fit exhausts the budget for good: it and every later
//! claim are marked [`Decision::over_budget`] (recorded, never sent). So the spend never
//! exceeds the budget (overshoot 0), and what stays unspent is less than the cost of the
//! first refused decision.
//!
//! A game's win ([`ExperienceKind::GameWon`], decided at its game's time) costs nothing (its
//! game's cost was the expected prize) and follows its game: it is exchanged with the game's
//! claims when its game claimed, and marked over budget exactly when its game is. So a prize is
//! never won in a game the campaign could not pay for.
//!
//! The spend is checkpointed with the other operators' state (`CampaignBudgets`): a restart
//! replays from the checkpoint's positions and makes the same choices, so a SIGKILL never
//! spends twice. Other decisions bypass the operator (no exchange). A budget that changes with
//! a new tree version is read from each decision's own tree: raising it lets an exhausted
//! campaign decide again only through a new campaign id (exhaustion is final).

use basketflow_operators::FastMap;
use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use basketflow_ingest::kafka_source::Millis;
use basketflow_operators::checkpoint::{Checkpointer, Checkpointing, Sharded};
use basketflow_vocab::{Decision, ExperienceKind, ParamValue, GAME_DECISION_PARAM};
use serde::{Deserialize, Serialize};
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::core::{Concat, Filter, Map};
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::Capability;
use timely::dataflow::Stream;

use super::TreeStats;

/// The checkpoint part name of [`within_budgets`].
pub const CAMPAIGN_BUDGETS: &str = "CampaignBudgets";

/// A decision that spends: its key, cost and budget, and the decision as JSON (decisions cross
/// processes as JSON: their experience params are an untagged enum, which bincode cannot
/// read).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Claim {
    retailer_id: String,
    campaign: String,
    decision_id: String,
    cost: u64,
    budget: u64,
    decision: String,
}

/// Whether `d` claims on a budget (a win goes with its game's claims: it has a budget only
/// when its game claimed, see [`super::prize`]).
fn claims(d: &Decision) -> bool {
    d.budget_cents.is_some()
        && !d.held_out
        && !d.capped
        && (d.cost_cents() > 0 || d.experience.kind == ExperienceKind::GameWon)
}

/// The game decision a win follows, if `d` is a win.
fn game_of(d: &Decision) -> Option<&str> {
    if d.experience.kind != ExperienceKind::GameWon {
        return None;
    }
    match d.experience.params.get(GAME_DECISION_PARAM) {
        Some(ParamValue::Text(id)) => Some(id),
        _ => Some(""),
    }
}

/// Worker routing of a campaign at a retailer.
fn route(retailer_id: &str, campaign: &str) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (retailer_id, campaign).hash(&mut h);
    h.finish()
}

/// What a campaign has spent at a retailer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Spend {
    /// Cents spent by the decisions allowed.
    pub spent: u64,
    /// A claim did not fit: every later one is refused.
    pub exhausted: bool,
}

/// The operator's checkpointed state: the spend per `(retailer, campaign)`.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Budgets {
    spend: FastMap<(String, String), Spend>,
}

impl Sharded for Budgets {
    fn retain_owned(&mut self, owns: &dyn Fn(u64) -> bool) {
        self.spend.retain(|(r, c), _| owns(route(r, c)));
    }

    fn absorb(&mut self, other: Self) {
        self.spend.extend(other.spend);
    }
}

/// Decides each claim of one time in `decision_id` order, then each win as its game (same
/// time, same campaign and retailer, so the same batch; a win whose game is not there is
/// refused: a prize is never paid without its game); returns the decisions, marked.
fn settle(spend: &mut FastMap<(String, String), Spend>, mut claims: Vec<Claim>) -> Vec<Decision> {
    claims.sort_by(|a, b| a.decision_id.cmp(&b.decision_id));
    let mut decided: Vec<Decision> = Vec::with_capacity(claims.len());
    let mut wins: Vec<Decision> = Vec::new();
    for c in claims {
        let mut d: Decision = serde_json::from_str(&c.decision).expect("own JSON");
        if game_of(&d).is_some() {
            wins.push(d);
            continue;
        }
        let s = spend.entry((c.retailer_id, c.campaign)).or_default();
        match s.spent.checked_add(c.cost) {
            Some(total) if !s.exhausted && total <= c.budget => s.spent = total,
            _ => {
                s.exhausted = true;
                d.over_budget = true;
            }
        }
        decided.push(d);
    }
    for mut win in wins {
        let game = game_of(&win).unwrap_or_default();
        win.over_budget = decided
            .iter()
            .find(|d| d.decision_id == game)
            .is_none_or(|d| d.over_budget);
        decided.push(win);
    }
    decided
}

/// The decisions, those of budgeted campaigns checked against their budget (see the module
/// docs); `stats.over_budget` counts the refused ones.
pub fn within_budgets<'scope>(
    decisions: Stream<'scope, Millis, Vec<Decision>>,
    stats: Arc<TreeStats>,
    checkpoints: Option<&Checkpointing>,
) -> Stream<'scope, Millis, Vec<Decision>> {
    let scope = decisions.scope();
    let mut checkpointer =
        Checkpointer::new(checkpoints, CAMPAIGN_BUDGETS, scope.index(), scope.peers());
    let mut state: Budgets = checkpointer.restore();
    let free = decisions.clone().filter(|d| !claims(d));
    let claims = decisions.flat_map(|d| {
        claims(&d).then(|| Claim {
            retailer_id: d.retailer_id.clone(),
            campaign: d.tree_id.clone(),
            decision_id: d.decision_id.clone(),
            cost: d.cost_cents(),
            budget: d.budget_cents.unwrap_or(0),
            decision: serde_json::to_string(&d).expect("a decision serializes"),
        })
    });
    let mut stash: BTreeMap<Millis, (Capability<Millis>, Vec<Claim>)> = BTreeMap::new();
    let checked = claims.unary_frontier(
        Exchange::new(|c: &Claim| route(&c.retailer_id, &c.campaign)),
        CAMPAIGN_BUDGETS,
        move |_cap, _info| {
            move |(input, frontier), output| {
                input.for_each(|cap, data| {
                    let t = *cap.least().expect("an input batch has a time");
                    stash
                        .entry(t)
                        .or_insert_with(|| {
                            (
                                cap.retain_least(0)
                                    .expect("an input batch has a capability"),
                                Vec::new(),
                            )
                        })
                        .1
                        .append(data);
                });
                while let Some((&t, _)) = stash.first_key_value() {
                    if frontier.less_equal(&t) {
                        break;
                    }
                    checkpointer.pass(t, &state);
                    let (cap, claims) = stash.remove(&t).expect("first key exists");
                    let mut decided = settle(&mut state.spend, claims);
                    let refused = decided.iter().filter(|d| d.over_budget).count() as u64;
                    stats.over_budget.fetch_add(refused, Ordering::Relaxed);
                    output.session(&cap).give_container(&mut decided);
                }
                if let Some(&bound) = frontier.frontier().first() {
                    checkpointer.pass(bound, &state);
                }
            }
        },
    );
    free.concat(checked)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(id: &str, cost: u64, budget: u64) -> Claim {
        Claim {
            retailer_id: "r".into(),
            campaign: "c".into(),
            decision_id: id.into(),
            cost,
            budget,
            decision: format!(
                r#"{{"decision_id":"{id}","retailer_id":"r","shopper_id":"s","session_id":null,
                "experience":{{"kind":"tension_cart","params":{{"cost_cents":{cost}}}}},
                "tree_id":"c","tree_version":1,"node_id":"n","reasons":[],
                "caused_by":{{"event_id":"e","partition":0,"offset":0,
                "occurred_at":"2026-11-20T10:00:00Z"}},"time":1,"decided_at":"2026-11-20T10:00:00Z"}}"#
            ),
        }
    }

    /// A win of game `game` (costs nothing, follows its game).
    fn win(id: &str, game: &str, budget: u64) -> Claim {
        let mut c = claim(id, 0, budget);
        c.decision = c.decision.replace(
            r#""kind":"tension_cart","params":{"cost_cents":0}"#,
            &format!(r#""kind":"game_won","params":{{"game_decision_id":"{game}"}}"#),
        );
        assert!(c.decision.contains("game_won"));
        c
    }

    #[test]
    fn a_win_follows_its_games_verdict_and_spends_nothing() {
        let mut spend = FastMap::default();
        // "a" (600) fits 1,000, "b" (600) does not; their wins ("0a" sorts before both)
        // follow them, and a win whose game is not in the time is refused.
        let got = settle(
            &mut spend,
            vec![
                win("0b", "b", 1_000),
                claim("b", 600, 1_000),
                win("0a", "a", 1_000),
                claim("a", 600, 1_000),
                win("0z", "z", 1_000),
            ],
        );
        assert_eq!(
            refused(&got),
            [
                ("a", false),
                ("b", true),
                ("0a", false),
                ("0b", true),
                ("0z", true)
            ]
        );
        assert_eq!(spend[&("r".to_owned(), "c".to_owned())].spent, 600);
    }

    fn refused(decisions: &[Decision]) -> Vec<(&str, bool)> {
        decisions
            .iter()
            .map(|d| (d.decision_id.as_str(), d.over_budget))
            .collect()
    }

    #[test]
    fn claims_fit_in_id_order_and_the_first_that_does_not_exhausts_the_budget() {
        let mut spend = FastMap::default();
        // One time: b (300) and a (500) fit 1,000 in id order; c (400) does not.
        let got = settle(
            &mut spend,
            vec![
                claim("c", 400, 1_000),
                claim("b", 300, 1_000),
                claim("a", 500, 1_000),
            ],
        );
        assert_eq!(refused(&got), [("a", false), ("b", false), ("c", true)]);
        assert_eq!(
            spend[&("r".to_owned(), "c".to_owned())],
            Spend {
                spent: 800,
                exhausted: true
            }
        );
        // A later claim that would fit (200) is refused: the budget is exhausted for good.
        let got = settle(&mut spend, vec![claim("d", 200, 1_000)]);
        assert_eq!(refused(&got), [("d", true)]);
        assert_eq!(spend[&("r".to_owned(), "c".to_owned())].spent, 800);
        // Exactly the budget fits.
        let mut spend = FastMap::default();
        let got = settle(
            &mut spend,
            vec![claim("a", 600, 1_000), claim("b", 400, 1_000)],
        );
        assert_eq!(refused(&got), [("a", false), ("b", false)]);
        // Another campaign's budget is its own.
        let mut other = claim("c", 100, 1_000);
        other.campaign = "other".into();
        let got = settle(&mut spend, vec![other]);
        assert_eq!(refused(&got), [("c", false)]);
    }
}
