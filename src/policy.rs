//! The door decision: when does a tracked face open the door?
//!
//! A track is **granted** when one identity reaches similarity ≥ `threshold` and margin ≥
//! `margin` (to the next identity) in at least `k` of the track's last `n` embeddings. It is
//! **refused** when `n` embeddings have been seen without that (reason `unknown` when most of
//! them matched no one at the threshold, `ambiguous` otherwise), when it takes longer than
//! `max_decision_s`, or when the face leaves before a decision. Each track is decided once.
//! A granted identity is not granted again (no relay pulse) for `cooldown_s`; such a track is
//! reported as `cooldown`. Thresholds come from the embedder's calibration unless configured.
//!
//! With a [`LiveRule`] (the kiosk's liveness, on by default) a grant also needs the face judged
//! live in `k` of the track's last `n` liveness scores, and only embeddings of frames whose face
//! was judged live count as matches (so a live face followed by a photo of someone else on the
//! same track matches no one); a track with more than `n − k` of its last `n` scores below the
//! liveness threshold can never get there and is refused as `spoof`, whatever it matched. The
//! relay never opens for it. Scores, not verdicts, are kept, so a new threshold (a reload)
//! judges the frames already seen.

use std::collections::HashMap;
use std::time::Duration;

use crate::gallery::Match;

/// Most embeddings a track's window holds.
pub const MAX_WINDOW: usize = 16;

#[derive(Clone, Debug, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    /// Cosine similarity to count as a match [default: the embedder's calibrated threshold].
    pub threshold: Option<f32>,
    /// Least margin to the next identity.
    pub margin: f32,
    /// Matches needed ...
    pub k: usize,
    /// ... among the last `n` embeddings of a track.
    pub n: usize,
    /// Seconds after a grant in which the same identity is not granted again.
    pub cooldown_s: f32,
    /// Seconds from a track's first embedding to its decision at most.
    pub max_decision_s: f32,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig { threshold: None, margin: 0.05, k: 2, n: 4, cooldown_s: 10.0, max_decision_s: 5.0 }
    }
}

impl PolicyConfig {
    /// Checks the fields, naming the one that is wrong.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(t) = self.threshold {
            if !(-1.0..=1.0).contains(&t) {
                return Err(format!("policy.threshold = {t} is outside [-1, 1]"));
            }
        }
        if !(0.0..=2.0).contains(&self.margin) {
            return Err(format!("policy.margin = {} is outside [0, 2]", self.margin));
        }
        if self.n == 0 || self.n > MAX_WINDOW {
            return Err(format!("policy.n = {} must be 1..={MAX_WINDOW}", self.n));
        }
        if self.k == 0 || self.k > self.n {
            return Err(format!("policy.k = {} must be 1..=n ({})", self.k, self.n));
        }
        for (name, v) in [("cooldown_s", self.cooldown_s), ("max_decision_s", self.max_decision_s)] {
            if !(0.0..=86_400.0).contains(&v) {
                return Err(format!("policy.{name} = {v} is outside [0, 86400]"));
            }
        }
        Ok(())
    }
}

/// The liveness part of the rule: live in `k` of the last `n` scored frames.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LiveRule {
    /// Fused live probability at or above which a frame's face counts as live.
    pub threshold: f32,
    pub k: usize,
    pub n: usize,
}

impl LiveRule {
    pub fn validate(&self) -> Result<(), String> {
        if !(0.0..=1.0).contains(&self.threshold) {
            return Err(format!("liveness_threshold = {} is outside [0, 1]", self.threshold));
        }
        if self.n == 0 || self.n > MAX_WINDOW {
            return Err(format!("liveness_n = {} must be 1..={MAX_WINDOW}", self.n));
        }
        if self.k == 0 || self.k > self.n {
            return Err(format!("liveness_k = {} must be 1..=liveness_n ({})", self.k, self.n));
        }
        Ok(())
    }
}

/// What the policy decided for a track.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Open the door.
    Granted,
    /// The identity was granted less than the cooldown ago: no second pulse.
    Cooldown,
    /// Not enough agreement: most embeddings matched no one.
    Unknown,
    /// Matches, but not `k` of `n` agreeing with enough margin.
    Ambiguous,
    /// No decision within `max_decision_s`.
    Timeout,
    /// The face left before a decision.
    Left,
    /// Judged not live (a print or a screen) in too many of its last frames.
    Spoof,
}

impl Verdict {
    pub fn opens(&self) -> bool {
        *self == Verdict::Granted
    }
}

#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Decision {
    pub track: u64,
    pub verdict: Verdict,
    /// The identity granted, or the best candidate of a refusal.
    pub identity: Option<String>,
    /// Best similarity and margin of that identity over the window.
    pub similarity: Option<f32>,
    pub margin: Option<f32>,
    /// Embeddings the decision rests on.
    pub embeddings: usize,
    /// With a [`LiveRule`]: the track's last liveness score, and its live votes among its
    /// last `n` scores, `(live, scored)`.
    pub liveness: Option<f32>,
    pub live_votes: Option<(usize, usize)>,
}

/// One embedding of a track: its best match and its face's liveness in the same frame.
struct Seen {
    best: Option<Match>,
    liveness: Option<f32>,
}

#[derive(Default)]
struct TrackState {
    window: heapless::Deque<Seen, MAX_WINDOW>,
    /// The liveness scores of the scored frames, the last `LiveRule::n`.
    live: heapless::Deque<f32, MAX_WINDOW>,
    last_liveness: Option<f32>,
    seen: usize,
    first: Option<Duration>,
    decided: bool,
}

pub struct Policy {
    config: PolicyConfig,
    live_rule: Option<LiveRule>,
    threshold: f32,
    tracks: HashMap<u64, TrackState>,
    last_grant: HashMap<String, Duration>,
}

impl Policy {
    /// `default_threshold` is used when the configuration has none.
    pub fn new(config: PolicyConfig, default_threshold: f32) -> Policy {
        let threshold = config.threshold.unwrap_or(default_threshold);
        Policy { config, live_rule: None, threshold, tracks: HashMap::new(), last_grant: HashMap::new() }
    }

    /// Grants need the face judged live as `rule` says; `None`: liveness plays no part.
    pub fn set_live_rule(&mut self, rule: Option<LiveRule>) {
        if let Some(r) = rule {
            for t in self.tracks.values_mut() {
                while t.live.len() > r.n {
                    t.live.pop_front();
                }
            }
        }
        self.live_rule = rule;
    }

    pub fn live_rule(&self) -> Option<LiveRule> {
        self.live_rule
    }

    pub fn threshold(&self) -> f32 {
        self.threshold
    }

    /// New settings (a reload): tracks in progress keep their embeddings, cut to the new `n`;
    /// cooldowns already running stay.
    pub fn reconfigure(&mut self, config: PolicyConfig, default_threshold: f32) {
        self.threshold = config.threshold.unwrap_or(default_threshold);
        for t in self.tracks.values_mut() {
            while t.window.len() > config.n {
                t.window.pop_front();
            }
        }
        self.config = config;
    }

    /// Whether `track` still wants embeddings.
    pub fn undecided(&self, track: u64) -> bool {
        !self.tracks.get(&track).is_some_and(|t| t.decided)
    }

    /// Whether a frame's face counts as live: always without a [`LiveRule`]; with one, only
    /// when it was scored at or above the threshold.
    fn live(&self, liveness: Option<f32>) -> bool {
        self.live_rule.is_none_or(|r| liveness.is_some_and(|p| crate::liveness::is_live(p, r.threshold)))
    }

    /// `(live, scored)` among the track's last liveness scores.
    fn live_votes(&self, t: &TrackState) -> (usize, usize) {
        (t.live.iter().filter(|&&p| self.live(Some(p))).count(), t.live.len())
    }

    /// The identity with the most embeddings that clear the threshold and the margin in frames
    /// judged live (ties: the higher similarity): (identity, those embeddings, its best
    /// similarity, its best margin).
    fn summary<'a>(&self, t: &'a TrackState) -> Option<(&'a str, usize, f32, f32)> {
        let mut best: Option<(&str, usize, f32, f32)> = None;
        for m in t.window.iter().filter_map(|e| e.best.as_ref()) {
            let same = || t.window.iter().filter_map(|e| Some((e.best.as_ref()?, e.liveness))).filter(|(o, _)| o.identity == m.identity);
            let hits = same()
                .filter(|&(o, p)| self.live(p) && o.similarity >= self.threshold && o.margin >= self.config.margin)
                .count();
            let sim = same().map(|(o, _)| o.similarity).fold(f32::MIN, f32::max);
            let margin = same().map(|(o, _)| o.margin).fold(f32::MIN, f32::max);
            if best.is_none_or(|b| (hits, sim) > (b.1, b.2)) {
                best = Some((&m.identity, hits, sim, margin));
            }
        }
        best
    }

    fn decide(&mut self, track: u64, now: Duration, verdict: Verdict) -> Decision {
        let t = self.tracks.entry(track).or_default();
        t.decided = true;
        let seen = t.seen;
        let t = &self.tracks[&track];
        let best = self.summary(t).map(|(i, _, s, m)| (i.to_string(), s, m));
        let mut verdict = verdict;
        if verdict == Verdict::Granted {
            let id = best.as_ref().map(|b| b.0.clone()).unwrap_or_default();
            let cooling = self.last_grant.get(&id).is_some_and(|&g| now.saturating_sub(g).as_secs_f32() < self.config.cooldown_s);
            if cooling {
                verdict = Verdict::Cooldown;
            } else {
                self.last_grant.insert(id, now);
            }
        }
        let (liveness, live_votes) = match self.live_rule {
            Some(_) => (t.last_liveness, Some(self.live_votes(t))),
            None => (None, None),
        };
        Decision {
            track,
            verdict,
            identity: best.as_ref().map(|b| b.0.clone()),
            similarity: best.as_ref().map(|b| b.1),
            margin: best.as_ref().map(|b| b.2),
            embeddings: seen,
            liveness,
            live_votes,
        }
    }

    /// Records one embedding's best match (`None`: the gallery is empty) and, with a
    /// [`LiveRule`], the face's liveness in the same frame (`None`: not scored) for `track` at
    /// time `now`; returns the decision when this embedding settles it.
    pub fn observe(&mut self, track: u64, now: Duration, best: Option<Match>, liveness: Option<f32>) -> Option<Decision> {
        let n = self.config.n;
        let rule = self.live_rule;
        let t = self.tracks.entry(track).or_default();
        if t.decided {
            return None;
        }
        t.first.get_or_insert(now);
        if t.window.len() == n {
            t.window.pop_front();
        }
        // Cannot fail: the window holds fewer than n <= MAX_WINDOW entries here.
        let liveness = liveness.filter(|p| p.is_finite());
        let _ = t.window.push_back(Seen { best, liveness });
        t.seen += 1;
        if let (Some(rule), Some(p)) = (rule, liveness) {
            while t.live.len() >= rule.n.clamp(1, MAX_WINDOW) {
                t.live.pop_front();
            }
            let _ = t.live.push_back(p);
            t.last_liveness = Some(p);
        }
        let t = &self.tracks[&track];
        let (hits, seen) = (self.summary(t).map_or(0, |c| c.1), t.seen);
        let (live_ok, spoof) = match rule {
            Some(r) => {
                let (live, scored) = self.live_votes(t);
                (live >= r.k, scored - live > r.n.saturating_sub(r.k))
            }
            None => (true, false),
        };
        if spoof {
            return Some(self.decide(track, now, Verdict::Spoof));
        }
        if hits >= self.config.k {
            if live_ok {
                return Some(self.decide(track, now, Verdict::Granted));
            }
            // The identity is settled; the liveness votes are not yet: wait for them (or the
            // decision's time limit).
            return self.tick(track, now);
        }
        if seen >= n {
            let matched = t.window.iter().filter_map(|e| e.best.as_ref()).filter(|m| m.similarity >= self.threshold).count();
            let verdict = if matched * 2 < t.window.len() { Verdict::Unknown } else { Verdict::Ambiguous };
            return Some(self.decide(track, now, verdict));
        }
        self.tick(track, now)
    }

    /// Times out `track` if its decision is overdue.
    pub fn tick(&mut self, track: u64, now: Duration) -> Option<Decision> {
        let t = self.tracks.get(&track)?;
        let overdue = t.first.is_some_and(|f| now.saturating_sub(f).as_secs_f32() > self.config.max_decision_s);
        (!t.decided && overdue).then(|| self.decide(track, now, Verdict::Timeout))
    }

    /// The track ended; an undecided track that was embedded at least once is refused.
    pub fn end(&mut self, track: u64, now: Duration) -> Option<Decision> {
        let decision = match self.tracks.get(&track) {
            Some(t) if !t.decided && t.seen > 0 => Some(self.decide(track, now, Verdict::Left)),
            _ => None,
        };
        self.tracks.remove(&track);
        decision
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(id: &str, sim: f32, margin: f32) -> Option<Match> {
        Some(Match { identity: id.into(), similarity: sim, margin })
    }

    fn policy() -> Policy {
        Policy::new(PolicyConfig { threshold: Some(0.5), margin: 0.1, k: 2, n: 4, cooldown_s: 10.0, max_decision_s: 3.0 }, 0.9)
    }

    fn s(x: f32) -> Duration {
        Duration::from_secs_f32(x)
    }

    #[test]
    fn two_of_four_grant_and_a_track_is_decided_once() {
        let mut p = policy();
        assert_eq!(p.observe(1, s(0.0), m("ada", 0.7, 0.3), None), None);
        assert_eq!(p.observe(1, s(0.1), m("bob", 0.55, 0.02), None), None, "margin too small to count");
        let d = p.observe(1, s(0.2), m("ada", 0.6, 0.2), None).unwrap();
        assert_eq!((d.verdict, d.identity.as_deref(), d.similarity, d.embeddings), (Verdict::Granted, Some("ada"), Some(0.7), 3));
        assert!(!p.undecided(1));
        assert_eq!(p.observe(1, s(0.3), m("ada", 0.9, 0.5), None), None);
        assert_eq!(p.end(1, s(0.4)), None);
    }

    #[test]
    fn strangers_and_ambiguity_are_refused_after_n() {
        let mut p = policy();
        for i in 0..3 {
            assert_eq!(p.observe(2, s(i as f32 * 0.1), m("ada", 0.2, 0.1), None), None);
        }
        assert_eq!(p.observe(2, s(0.3), m("ada", 0.6, 0.3), None).unwrap().verdict, Verdict::Unknown);
        for i in 0..3 {
            assert_eq!(p.observe(3, s(i as f32 * 0.1), m(["ada", "bob", "cy"][i], 0.6, 0.3), None), None);
        }
        assert_eq!(p.observe(3, s(0.3), m("dee", 0.6, 0.3), None).unwrap().verdict, Verdict::Ambiguous);
        assert_eq!(p.observe(4, s(0.0), None, None), None, "empty gallery");
    }

    #[test]
    fn cooldown_timeout_and_leaving() {
        let mut p = policy();
        p.observe(1, s(0.0), m("ada", 0.7, 0.3), None);
        assert_eq!(p.observe(1, s(0.1), m("ada", 0.7, 0.3), None).unwrap().verdict, Verdict::Granted);
        p.observe(2, s(5.0), m("ada", 0.7, 0.3), None);
        let d = p.observe(2, s(5.1), m("ada", 0.7, 0.3), None).unwrap();
        assert_eq!(d.verdict, Verdict::Cooldown);
        assert!(!d.verdict.opens());
        p.observe(3, s(20.0), m("ada", 0.7, 0.3), None);
        assert_eq!(p.observe(3, s(20.1), m("ada", 0.7, 0.3), None).unwrap().verdict, Verdict::Granted, "cooldown over");
        p.observe(4, s(30.0), m("bob", 0.2, 0.1), None);
        assert_eq!(p.tick(4, s(32.0)), None);
        assert_eq!(p.tick(4, s(33.5)).unwrap().verdict, Verdict::Timeout);
        p.observe(5, s(40.0), m("bob", 0.2, 0.1), None);
        assert_eq!(p.end(5, s(40.5)).unwrap().verdict, Verdict::Left);
        assert_eq!(p.end(6, s(41.0)), None, "never embedded: nothing to report");
    }

    fn live_policy() -> Policy {
        let mut p = policy();
        p.set_live_rule(Some(LiveRule { threshold: 0.5, k: 2, n: 4 }));
        p
    }

    #[test]
    fn a_match_waits_for_live_votes_and_then_opens() {
        let mut p = live_policy();
        assert_eq!(p.observe(1, s(0.0), m("ada", 0.7, 0.3), Some(0.9)), None);
        assert_eq!(p.observe(1, s(0.1), m("ada", 0.7, 0.3), Some(0.2)), None, "two matches but one live vote: wait");
        let d = p.observe(1, s(0.2), m("ada", 0.7, 0.3), Some(0.8)).unwrap();
        assert_eq!((d.verdict, d.liveness, d.live_votes), (Verdict::Granted, Some(0.8), Some((2, 3))));
        // Without a score (the model failed) nothing counts as live: the track times out.
        p.observe(2, s(10.0), m("bob", 0.7, 0.3), None);
        assert_eq!(p.observe(2, s(10.1), m("bob", 0.7, 0.3), None), None);
        assert_eq!(p.tick(2, s(13.5)).unwrap().verdict, Verdict::Timeout);
    }

    #[test]
    fn a_face_that_cannot_reach_k_live_votes_is_a_spoof_whoever_it_matches() {
        let mut p = live_policy();
        assert_eq!(p.observe(1, s(0.0), m("ada", 0.9, 0.5), Some(0.1)), None);
        assert_eq!(p.observe(1, s(0.1), m("ada", 0.9, 0.5), Some(0.3)), None, "identity settled, liveness not yet");
        // 3 of 4 below the threshold: at most 1 live vote in the window, fewer than k = 2.
        let d = p.observe(1, s(0.2), m("ada", 0.9, 0.5), Some(0.2)).unwrap();
        assert_eq!((d.verdict.clone(), d.identity.as_deref(), d.live_votes), (Verdict::Spoof, Some("ada"), Some((0, 3))));
        assert!(!d.verdict.opens());
        // A refused spoof starts no cooldown: the real person is granted right after.
        p.observe(2, s(0.5), m("ada", 0.9, 0.5), Some(0.9));
        assert_eq!(p.observe(2, s(0.6), m("ada", 0.9, 0.5), Some(0.9)).unwrap().verdict, Verdict::Granted);
        // Liveness off: no votes needed, none reported.
        let mut q = policy();
        let d = q.observe(3, s(0.0), m("ada", 0.9, 0.5), Some(0.0)).or_else(|| q.observe(3, s(0.1), m("ada", 0.9, 0.5), Some(0.0))).unwrap();
        assert_eq!((d.verdict, d.live_votes), (Verdict::Granted, None));
        assert!(LiveRule { threshold: 0.5, k: 3, n: 2 }.validate().unwrap_err().contains("liveness_k"));
    }

    #[test]
    fn matches_count_only_in_frames_judged_live() {
        // The attacker's own live face (matching no one), then a phone showing ada on the same
        // track: two live votes and two matches, but never in the same frame.
        let mut p = live_policy();
        assert_eq!(p.observe(1, s(0.0), m("ada", 0.1, 0.1), Some(0.9)), None);
        assert_eq!(p.observe(1, s(0.1), m("ada", 0.1, 0.1), Some(0.9)), None);
        assert_eq!(p.observe(1, s(0.2), m("ada", 0.9, 0.5), Some(0.1)), None);
        let d = p.observe(1, s(0.3), m("ada", 0.9, 0.5), Some(0.1)).unwrap();
        assert!(!d.verdict.opens(), "{d:?}");
        // A stricter threshold after a reload judges the scores already seen.
        let mut q = live_policy();
        q.observe(2, s(0.0), m("ada", 0.9, 0.5), Some(0.6));
        q.set_live_rule(Some(LiveRule { threshold: 0.7, k: 2, n: 4 }));
        assert_eq!(q.observe(2, s(0.1), m("ada", 0.9, 0.5), Some(0.8)), None, "0.6 no longer counts as live");
    }

    #[test]
    fn config_errors_name_the_field() {
        let bad = PolicyConfig { k: 5, n: 4, ..PolicyConfig::default() };
        assert!(bad.validate().unwrap_err().contains("policy.k"));
        let bad = PolicyConfig { threshold: Some(1.5), ..PolicyConfig::default() };
        assert!(bad.validate().unwrap_err().contains("policy.threshold"));
        assert!(PolicyConfig::default().validate().is_ok());
    }
}
