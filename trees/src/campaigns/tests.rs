//! Unit tests of the campaign file: dates, activity, the example file, refusals.

use super::*;

/// One campaign of every kind at retailer `r1`, active through November 2026 (also the
/// builder's tests' campaign).
pub(crate) const CAMPAIGN: &str = r#"
    [[campaign]]
    id = "autumn-pasta"
    retailer = "r1"
    start = "2026-09-01"
    end = "2026-11-30"
    category = "pasta"
    complement = "pasta-sauce"
    [campaign.discount]
    min_percent = 5
    max_percent = 20
    regular_orders = 5
    [campaign.tension_cart]
    round_cents = 500
    step_cents = 500
    announce_before_cents = 200
    reward_cents = 300
    [campaign.promotion]
    search_terms = ["pasta"]
    view_min_count = 2
    max_products = 3
    [campaign.gamified]
    min_orders = 5
    prize = "basket_back"
    win_one_in = 20
    max_prize_cents = 10000
"#;

#[test]
fn dates_and_activity() {
    let day = parse_instant("2026-11-30", false).unwrap();
    assert_eq!(
        day,
        Timestamp::parse_rfc3339("2026-11-30T00:00:00Z").unwrap()
    );
    assert_eq!(
        parse_instant("2026-11-30", true).unwrap(),
        Timestamp::parse_rfc3339("2026-12-01T00:00:00Z").unwrap()
    );
    assert_eq!(
        parse_instant("2026-11-30T10:00:00+02:00", true).unwrap(),
        Timestamp::parse_rfc3339("2026-11-30T08:00:00Z").unwrap()
    );
    assert!(parse_instant("2026-11-30T10:00:00", false).is_err());
    assert!(parse_instant("30/11/2026", false).is_err());
    let at = |s: &str| parse_instant(s, false).unwrap();
    let ids = |now: &str| {
        let (active, skipped) = select_active(parse_campaigns(CAMPAIGN).unwrap(), at(now));
        (
            active
                .iter()
                .map(|p| p.campaign.id.clone())
                .collect::<Vec<_>>(),
            skipped,
        )
    };
    assert_eq!(
        ids("2026-08-31T23:59:59Z"),
        (
            vec![],
            vec![(
                "autumn-pasta".into(),
                "starts at 2026-09-01T00:00:00Z".into()
            )]
        )
    );
    assert_eq!(ids("2026-09-01").0, ["autumn-pasta"]);
    assert_eq!(ids("2026-11-30T23:59:59Z").0, ["autumn-pasta"]);
    assert_eq!(
        ids("2026-12-01").1,
        [(
            "autumn-pasta".into(),
            "ended at 2026-12-01T00:00:00Z".into()
        )]
    );
}

#[test]
fn the_example_campaign_file_is_valid() {
    let plans = parse_campaigns(include_str!("../../../examples/campaigns.toml")).unwrap();
    let got: Vec<_> = plans
        .iter()
        .map(|p| (p.campaign.id.as_str(), p.start, p.end, p.kinds.len()))
        .collect();
    assert_eq!(
        got,
        [
            (
                "pasta-and-sauce",
                Timestamp::parse_rfc3339("2026-09-01T00:00:00Z"),
                None,
                4
            ),
            (
                "coffee-break",
                Timestamp::parse_rfc3339("2026-01-01T00:00:00Z"),
                None,
                2
            ),
        ]
    );
    assert_eq!(plans[0].search_terms, ["pasta", "spaghetti"]);
    assert_eq!(plans[1].retailers, None);
    let holdouts: Vec<(u16, u32)> = plans
        .iter()
        .map(|p| (p.holdout_basis_points, p.campaign.attribution_hours))
        .collect();
    assert_eq!(holdouts, [(1_000, 168), (2_000, 168)]);
}

#[test]
fn holdout_shares_are_basis_points_and_windows_are_bounded() {
    let with = |extra: &str| {
        parse_campaigns(&format!(
            "[[campaign]]\nid = \"c\"\nretailer = \"all\"\ncategory = \"x\"\ncomplement = \"y\"\n{extra}"
        ))
    };
    let bp = |extra: &str| with(extra).unwrap()[0].holdout_basis_points;
    assert_eq!(bp(""), 0);
    assert_eq!(bp("holdout_share = 0.1"), 1_000);
    assert_eq!(bp("holdout_share = 0.0001"), 1);
    assert_eq!(bp("holdout_share = 1"), 10_000);
    assert_eq!(bp("holdout_share = 0.07"), 700);
    let refused = |extra: &str| format!("{:#}", with(extra).unwrap_err());
    assert!(
        refused("holdout_share = 0.00005").contains("more than 4 decimals"),
        "{}",
        refused("holdout_share = 0.00005")
    );
    assert!(refused("holdout_share = 1.5").contains("between 0 and 1"));
    assert!(refused("holdout_share = -0.1").contains("between 0 and 1"));
    assert!(refused("attribution_hours = 0").contains("attribution_hours"));
    let caps = with(
        "[[campaign.cap]]\nper_session = 2\n[[campaign.cap]]\nkind = \"tension_cart\"\nper_day = 1\n",
    )
    .unwrap();
    assert_eq!(
        caps[0].caps,
        [
            FrequencyCap {
                kind: None,
                per_session: Some(2),
                per_day: None
            },
            FrequencyCap {
                kind: Some(ExperienceKind::TensionCart),
                per_session: None,
                per_day: Some(1)
            }
        ]
    );
    assert!(refused("[[campaign.cap]]\nkind = \"tension_cart\"\n").contains("neither"));
    assert!(refused("[[campaign.cap]]\nper_day = 0\n").contains("a cap of 0"));
    assert!(refused("[[campaign.cap]]\nper_dya = 1\n").contains("unknown field"));
    assert_eq!(
        with("attribution_hours = 24").unwrap()[0]
            .campaign
            .attribution_hours,
        24
    );
}

#[test]
fn bad_campaigns_are_refused_with_the_reason() {
    let err = |text: &str| format!("{:#}", parse_campaigns(text).unwrap_err());
    let base =
        "id = \"c\"\nretailer = \"r1\"\ncategory = \"pasta\"\ncomplement = \"pasta-sauce\"\n";
    assert!(err(&format!(
        "[[campaign]]\n{base}[campaign.discount]\nmin_percent = 30\nmax_percent = 20\n"
    ))
    .contains("0 <= min_percent <= max_percent <= 100"));
    assert!(err(&format!("[[campaign]]\n{base}[[campaign]]\n{base}")).contains("appears twice"));
    assert!(
        err("[[campaign]]\nid = \"c\"\nretailer = \"r1\"\ncategory = \"pasta\"\n")
            .contains("needs a complement")
    );
    assert!(err(&format!("[[campaign]]\n{base}colour = \"red\"\n")).contains("unknown field"));
    assert!(err(&format!(
        "[[campaign]]\n{base}experiences = [\"gamified_promotion\", \"game_won\"]\n"
    ))
    .contains("game_won is not an experience to enable"));
    assert!(err(&format!(
        "[[campaign]]\n{base}start = \"2026-12-01\"\nend = \"2026-11-01\"\n"
    ))
    .contains("is not before end"));
    assert!(err(&format!("[[campaign]]\n{base}experiences = []\n")).contains("at least one kind"));
}
