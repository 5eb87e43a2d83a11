//! The sweep's judgement: is `suggest`'s layout within the tolerance of the
//! fastest layout, slower than it, or can the runs not tell?
//!
//! A shared machine's throughput drifts by several times from one minute to
//! the next, so absolute figures of two layouts measured at different times
//! say little. The sweep runs every layout once per round (in a shuffled
//! order), and this module compares `suggest`'s layout with each other
//! layout by the *ratio within a round*: `other / suggested`, both measured
//! in the same minute. Each comparison is a sign test on those paired
//! ratios against the tolerance's threshold `t = 1 / (1 - tolerance)`
//! (suggest's layout is within the tolerance of a layout when the latter is
//! at most `t` times as fast):
//!
//! - **slower**: some layout beat `t` in so many rounds that a median ratio
//!   of `t` or less would give that few losses with probability at most
//!   `alpha / m`, where `m` is the number of layouts compared (Bonferroni:
//!   any of `m` layouts could win by chance).
//! - **within**: every other layout stayed below `t` in so many rounds that
//!   a median ratio of `t` or more would give that with probability at most
//!   `alpha` each (all of them must hold, so no correction is needed).
//! - **undecided** otherwise: the spread is too wide for the rounds run.
//!
//! The sign test assumes only that rounds are independent draws; it makes
//! no assumption about the shape of the noise, which on a shared machine is
//! lopsided and heavy-tailed. Its price is rounds: a pass needs at least 5
//! rounds at `alpha = 0.05`, a fail against 11 other layouts at least 8.

/// One layout's figure (writes/s) per round; `None` where the run failed.
pub type Rounds<'a> = &'a [Option<f64>];

/// How one other layout compares with `suggest`'s.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    /// Index of the other layout among those the caller passed.
    pub other: usize,
    /// Rounds in which both layouts measured something.
    pub rounds: usize,
    /// Median of `other / suggested` over those rounds.
    pub median_ratio: f64,
    /// First and third quartiles of the ratios.
    pub ratio_quartiles: (f64, f64),
    /// Rounds in which the other layout was more than `t` times as fast.
    pub rounds_faster: usize,
    /// Rounds in which it was less than `t` times as fast.
    pub rounds_not_faster: usize,
    /// Sign test p-value of "the other layout is faster by more than the
    /// tolerance" (small: it is), before any correction.
    pub p_faster: f64,
    /// Sign test p-value of "suggest's layout is within the tolerance of
    /// it" (small: it is).
    pub p_within: f64,
}

impl Comparison {
    /// How much slower suggest's layout is than this one, as a fraction
    /// (0.2: 20% fewer writes/s); negative when it is faster.
    pub fn suggested_slower_by(&self) -> f64 {
        1.0 - 1.0 / self.median_ratio
    }
}

/// The sweep's answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Suggest's layout is within the tolerance of every other layout, with
    /// at least this confidence.
    Within { confidence: f64 },
    /// Suggest's layout is slower than layout `than` by more than the
    /// tolerance (by `by`, the median of the paired ratios), with at least
    /// this confidence.
    Slower { than: usize, by: f64, confidence: f64 },
    /// The runs cannot tell. `rounds_needed` is the fewest paired rounds
    /// with which a pass could be decided, and a fail at all.
    Undecided {
        reason: String,
        rounds_needed_within: usize,
        rounds_needed_slower: usize,
    },
}

/// Judges `suggested` against every layout in `others`, round by round.
/// `tolerance` is the fraction suggest's layout may be slower by (0.05);
/// `alpha` the chance of a wrong decided verdict accepted (0.05).
pub fn judge(suggested: Rounds<'_>, others: &[Rounds<'_>], tolerance: f64, alpha: f64) -> (Vec<Comparison>, Verdict) {
    let threshold = 1.0 / (1.0 - tolerance);
    let comparisons: Vec<Comparison> = others
        .iter()
        .enumerate()
        .filter_map(|(index, other)| compare(index, suggested, other, threshold))
        .collect();
    let compared = comparisons.len().max(1);
    let rounds_needed_within = rounds_for(alpha);
    let rounds_needed_slower = rounds_for(alpha / compared as f64);
    let undecided = |reason: String| Verdict::Undecided {
        reason,
        rounds_needed_within,
        rounds_needed_slower,
    };
    if suggested.iter().all(Option::is_none) {
        return (
            comparisons,
            undecided("every run of suggest's layout failed".to_owned()),
        );
    }
    if comparisons.is_empty() {
        return (
            comparisons,
            undecided("no other layout was measured in the same rounds".to_owned()),
        );
    }
    let slower = comparisons
        .iter()
        .filter(|c| c.p_faster * compared as f64 <= alpha)
        .max_by(|a, b| a.median_ratio.total_cmp(&b.median_ratio));
    if let Some(winner) = slower {
        let verdict = Verdict::Slower {
            than: winner.other,
            by: winner.suggested_slower_by(),
            confidence: 1.0 - winner.p_faster * compared as f64,
        };
        return (comparisons, verdict);
    }
    let unmeasured = others.len() - comparisons.len();
    let worst_within = comparisons.iter().map(|c| c.p_within).fold(0.0, f64::max);
    if worst_within <= alpha && unmeasured == 0 {
        let verdict = Verdict::Within {
            confidence: 1.0 - worst_within,
        };
        return (comparisons, verdict);
    }
    let open = comparisons.iter().filter(|c| c.p_within > alpha).count();
    let mut reason = format!(
        "spread too wide: {open} of {} layout(s) neither clearly within {:.0}% nor clearly faster",
        comparisons.len(),
        tolerance * 100.0
    );
    if unmeasured > 0 {
        reason.push_str(&format!(
            "; {unmeasured} layout(s) not measured in any round with suggest's"
        ));
    }
    (comparisons, undecided(reason))
}

/// Compares one layout with suggest's over the rounds both measured.
fn compare(index: usize, suggested: Rounds<'_>, other: Rounds<'_>, threshold: f64) -> Option<Comparison> {
    let ratios: Vec<f64> = suggested
        .iter()
        .zip(other)
        .filter_map(|pair| match pair {
            (Some(s), Some(o)) if *s > 0.0 => Some(o / s),
            _ => None,
        })
        .collect();
    if ratios.is_empty() {
        return None;
    }
    let rounds_faster = ratios.iter().filter(|&&r| r > threshold).count();
    let rounds_not_faster = ratios.iter().filter(|&&r| r < threshold).count();
    // Ratios exactly at the threshold say nothing either way.
    let decisive = rounds_faster + rounds_not_faster;
    Some(Comparison {
        other: index,
        rounds: ratios.len(),
        median_ratio: quantile(&ratios, 0.5),
        ratio_quartiles: (quantile(&ratios, 0.25), quantile(&ratios, 0.75)),
        rounds_faster,
        rounds_not_faster,
        p_faster: binomial_tail(decisive, rounds_faster),
        p_within: binomial_tail(decisive, rounds_not_faster),
    })
}

/// P(X >= k) for X ~ Binomial(n, 1/2): the one-sided sign test's p-value.
pub fn binomial_tail(n: usize, k: usize) -> f64 {
    if k == 0 {
        return 1.0;
    }
    if k > n {
        return 0.0;
    }
    // Sum C(n, i) / 2^n for i in k..=n, in f64: n stays small (rounds).
    let mut term = 0.5f64.powi(n as i32); // C(n, 0) / 2^n
    let mut tail = 0.0;
    for i in 0..=n {
        if i >= k {
            tail += term;
        }
        term = term * (n - i) as f64 / (i + 1) as f64;
    }
    tail.min(1.0)
}

/// The fewest rounds, all going one way, that reach a p-value of `alpha`.
fn rounds_for(alpha: f64) -> usize {
    (1..=64).find(|&n| binomial_tail(n, n) <= alpha).unwrap_or(64)
}

/// The `q` quantile of `values`, interpolating between order statistics
/// (0.5: the median, 0.25 and 0.75: the quartiles).
pub fn quantile(values: &[f64], q: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    if sorted.is_empty() {
        return f64::NAN;
    }
    let position = q * (sorted.len() - 1) as f64;
    let below = position.floor() as usize;
    let above = position.ceil() as usize;
    sorted[below] + (sorted[above] - sorted[below]) * (position - below as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOLERANCE: f64 = 0.05;
    const ALPHA: f64 = 0.05;

    fn some(values: &[f64]) -> Vec<Option<f64>> {
        values.iter().copied().map(Some).collect()
    }

    /// A machine whose speed drifts by up to 6x from round to round, as the
    /// development VM's did: every layout's figure in a round is the
    /// round's weather times the layout's own speed.
    const WEATHER: [f64; 10] = [1.0, 0.3, 2.1, 0.7, 1.6, 0.25, 1.2, 0.5, 1.9, 0.9];

    fn layout(speed: f64) -> Vec<Option<f64>> {
        WEATHER.iter().map(|w| Some(10_000.0 * w * speed)).collect()
    }

    #[test]
    fn binomial_tails_match_hand_computed_values() {
        assert_eq!(binomial_tail(5, 5), 1.0 / 32.0);
        assert_eq!(binomial_tail(5, 0), 1.0);
        assert!((binomial_tail(10, 9) - 11.0 / 1024.0).abs() < 1e-12);
        assert!((binomial_tail(4, 2) - 11.0 / 16.0).abs() < 1e-12);
        assert_eq!(binomial_tail(3, 4), 0.0);
        assert_eq!(rounds_for(0.05), 5);
        assert_eq!(rounds_for(0.05 / 11.0), 8);
    }

    #[test]
    fn quartiles_interpolate_between_runs() {
        let values = [4.0, 1.0, 3.0, 2.0];
        assert_eq!(quantile(&values, 0.5), 2.5);
        assert_eq!(quantile(&values, 0.25), 1.75);
        assert_eq!(quantile(&values, 0.75), 3.25);
        assert_eq!(quantile(&[7.0], 0.25), 7.0);
    }

    #[test]
    fn a_clear_loss_under_drifting_weather_is_a_decided_slower() {
        // Suggest's layout is 30% slower than one other layout, and equal to
        // a third; absolute figures overlap widely (0.25x..2.1x weather) but
        // every round's ratio says the same.
        let suggested = layout(0.7);
        let faster = layout(1.0);
        let same = layout(0.7);
        let (comparisons, verdict) = judge(&suggested, &[&faster, &same], TOLERANCE, ALPHA);
        let Verdict::Slower { than, by, confidence } = verdict else {
            panic!("expected slower, got {verdict:?}");
        };
        assert_eq!(than, 0);
        assert!((by - 0.3).abs() < 1e-9, "{by}");
        assert!(confidence >= 0.95, "{confidence}");
        assert_eq!(comparisons[0].rounds_faster, 10);
        assert_eq!(comparisons[1].rounds_not_faster, 10);
        // The absolute spreads overlap: medians of absolute figures would
        // not have decided it.
        let max_suggested = suggested.iter().flatten().copied().fold(0.0, f64::max);
        let min_faster = faster.iter().flatten().copied().fold(f64::MAX, f64::min);
        assert!(max_suggested > min_faster);
    }

    #[test]
    fn a_clear_win_is_within_the_tolerance() {
        // Suggest's layout is the fastest or 2% behind the best, in every
        // round, under the same weather.
        let suggested = layout(1.0);
        let close = layout(1.02);
        let slow = layout(0.5);
        let (comparisons, verdict) = judge(&suggested, &[&close, &slow], TOLERANCE, ALPHA);
        let Verdict::Within { confidence } = verdict else {
            panic!("expected within, got {verdict:?}");
        };
        assert!(confidence >= 0.95, "{confidence}");
        assert!((comparisons[0].median_ratio - 1.02).abs() < 1e-9);
    }

    #[test]
    fn noise_without_a_consistent_direction_is_undecided() {
        // The paired ratios swing both ways around the threshold: neither a
        // pass nor a fail may come out of it.
        let suggested = layout(1.0);
        let swings = [1.6, 0.7, 1.3, 0.8, 1.5, 0.6, 1.4, 0.9, 1.2, 0.75];
        let noisy: Vec<Option<f64>> = suggested.iter().zip(swings).map(|(s, k)| s.map(|s| s * k)).collect();
        let (_, verdict) = judge(&suggested, &[&noisy], TOLERANCE, ALPHA);
        assert!(matches!(verdict, Verdict::Undecided { .. }), "{verdict:?}");
    }

    #[test]
    fn too_few_rounds_never_decide_even_when_every_round_agrees() {
        // 3 rounds, all a 2x loss: 1/8 chance under no difference, too much.
        let suggested = some(&[1000.0, 3000.0, 500.0]);
        let faster = some(&[2000.0, 6000.0, 1000.0]);
        let (_, verdict) = judge(&suggested, &[&faster], TOLERANCE, ALPHA);
        let Verdict::Undecided {
            rounds_needed_within,
            rounds_needed_slower,
            ..
        } = verdict
        else {
            panic!("expected undecided, got {verdict:?}");
        };
        assert_eq!((rounds_needed_within, rounds_needed_slower), (5, 5));
        // Nor does a pass come out of 4 rounds.
        let suggested = some(&[1000.0, 3000.0, 500.0, 800.0]);
        let same = suggested.clone();
        let (_, verdict) = judge(&suggested, &[&same], TOLERANCE, ALPHA);
        assert!(matches!(verdict, Verdict::Undecided { .. }), "{verdict:?}");
    }

    #[test]
    fn a_loss_against_one_of_many_layouts_needs_more_rounds() {
        // 6 rounds of a 20% loss decide against one layout (1/64 <= 0.05)
        // but not once 11 layouts are compared (Bonferroni: 1/64 > 0.05/11).
        let suggested = some(&[1000.0, 400.0, 2000.0, 900.0, 1500.0, 300.0]);
        let faster: Vec<Option<f64>> = suggested.iter().map(|s| s.map(|s| s * 1.25)).collect();
        let (_, verdict) = judge(&suggested, &[&faster], TOLERANCE, ALPHA);
        assert!(matches!(verdict, Verdict::Slower { than: 0, .. }), "{verdict:?}");
        let equal = suggested.clone();
        let mut others: Vec<&[Option<f64>]> = vec![&faster];
        others.extend(std::iter::repeat_n(&equal[..], 10));
        let (_, verdict) = judge(&suggested, &others, TOLERANCE, ALPHA);
        assert!(matches!(verdict, Verdict::Undecided { .. }), "{verdict:?}");
    }

    #[test]
    fn failed_runs_drop_their_round_from_the_pairs() {
        let suggested = vec![Some(1000.0), None, Some(500.0), Some(800.0), Some(2000.0), Some(700.0)];
        let other = vec![Some(1000.0), Some(9999.0), None, Some(800.0), Some(2000.0), Some(700.0)];
        let (comparisons, verdict) = judge(&suggested, &[&other], TOLERANCE, ALPHA);
        assert_eq!(comparisons[0].rounds, 4);
        assert!(matches!(verdict, Verdict::Undecided { .. }), "{verdict:?}");
        // A layout with no run paired with suggest's keeps a pass away.
        let never = vec![None; 6];
        let many = layout(1.0);
        let (comparisons, verdict) = judge(&many, &[&many, &never], TOLERANCE, ALPHA);
        assert_eq!(comparisons.len(), 1);
        assert!(matches!(verdict, Verdict::Undecided { .. }), "{verdict:?}");
        let (_, verdict) = judge(&never, &[&many], TOLERANCE, ALPHA);
        assert!(matches!(verdict, Verdict::Undecided { .. }), "{verdict:?}");
    }
}
