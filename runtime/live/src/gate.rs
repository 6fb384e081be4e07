//! The gate of one deployment: whether its intents are published, and at
//! what size, as drift comes and goes and operators step in.
//!
//! # States and transitions
//!
//! - `open`: intents are published at full size.
//! - `suspended` (`manual` or automatic): nothing is published; paper
//!   trading continues.
//! - `recovering` at step `k`: intents are published at `steps[k]` of their
//!   size.
//! - `stopped` (emergency stop): nothing is published until released.
//!
//! Automatic ([`Gate::evaluate`], actor [`AUTO_ACTOR`]):
//! - open or recovering → suspended (automatic) when `score ≥ 1`; the reason
//!   names each kind over its threshold with its value;
//! - suspended (automatic) → recovering step 0 once `cooldown_ms` have passed
//!   since the suspension (at exactly `cooldown_ms`), when `auto_recover`;
//! - recovering step `k` → step `k + 1`, or open after the last step, once
//!   `step_fills` fills were matched during the step with the score under 1
//!   (any score ≥ 1 suspends first).
//!
//! Manual ([`Gate::command`]): `suspend` (open, recovering or automatically
//! suspended → suspended manual), `resume` (suspended → recovering step 0),
//! `force_open` (suspended or recovering → open; a reason is required),
//! `emergency_stop` (any state but stopped → stopped), `release` (stopped →
//! suspended manual). A command that would not change the state, or is not
//! allowed in it, is refused with the current state and the commands it
//! allows.
//!
//! # Decide, record, apply
//!
//! [`Gate::evaluate`] and [`Gate::command`] only decide: they return a
//! [`Transition`] and change nothing. The caller writes it to the audit log
//! ([`crate::AuditLog`]) durably, then [`Gate::apply`]s it, so no transition
//! takes effect unrecorded. A transition that leaves suspension to publish
//! again ([`Transition::restarts_drift`]) tells the caller to
//! [`crate::DriftTracker::restart`] the drift measures, so that the drift
//! that caused the suspension does not trip the gate again at once; the
//! gate then counts the step's matched fills from zero.
//!
//! What it does not do: measure drift, keep time, or write the log.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::drift::DriftSnapshot;
use crate::settings::{self, ensure, ConfigError, Settings};

/// Default [`GatePolicy::steps`]: 25 %, 50 %, then 100 % of the size.
pub const DEFAULT_STEPS: [f64; 3] = [0.25, 0.5, 1.0];
/// Default [`GatePolicy::step_fills`].
pub const DEFAULT_STEP_FILLS: u32 = 5;
/// Default [`GatePolicy::cooldown_ms`]: one minute.
pub const DEFAULT_COOLDOWN_MS: u64 = 60_000;
/// Largest accepted [`GatePolicy::cooldown_ms`]: one week.
pub const MAX_COOLDOWN_MS: u64 = 7 * 86_400_000;
/// The actor of automatic transitions.
pub const AUTO_ACTOR: &str = "gate";

/// How the gate recovers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GatePolicy {
    /// Size factors while recovering, increasing, each in (0, 1], the last
    /// 1 (default [0.25, 0.5, 1.0]).
    pub steps: Vec<f64>,
    /// Matched fills a step is held with the score under 1 before the next,
    /// ≥ 1 (default 5).
    pub step_fills: u32,
    /// Shortest automatic suspension, in 0..=604800000 ms (default 60000).
    pub cooldown_ms: u64,
    /// Whether an automatic suspension recovers on its own (default true).
    pub auto_recover: bool,
}

impl Default for GatePolicy {
    fn default() -> Self {
        GatePolicy {
            steps: DEFAULT_STEPS.to_vec(),
            step_fills: DEFAULT_STEP_FILLS,
            cooldown_ms: DEFAULT_COOLDOWN_MS,
            auto_recover: true,
        }
    }
}

impl GatePolicy {
    /// Parses and checks a TOML policy; `origin` names it in errors.
    pub fn from_toml_str(text: &str, origin: &str) -> Result<GatePolicy, ConfigError> {
        settings::from_toml(text, origin)
    }

    /// Parses and checks a JSON policy; `origin` names it in errors.
    pub fn from_json_str(text: &str, origin: &str) -> Result<GatePolicy, ConfigError> {
        settings::from_json(text, origin)
    }

    /// Checks every value's range, naming `origin` and the key in errors.
    pub fn validate(&self, origin: &str) -> Result<(), ConfigError> {
        let p = self;
        ensure(
            !p.steps.is_empty(),
            origin,
            "steps",
            "[]",
            "at least one step, the last 1",
        )?;
        let mut previous = 0.0;
        for (i, &step) in p.steps.iter().enumerate() {
            let ok = step > previous && step <= 1.0;
            let expected = "in (0, 1] and above the previous step";
            ensure(ok, origin, format!("steps[{i}]"), step, expected)?;
            previous = step;
        }
        let last = p.steps.len() - 1;
        let full = previous == 1.0;
        ensure(
            full,
            origin,
            format!("steps[{last}]"),
            previous,
            "1 (the last step is full size)",
        )?;
        ensure(p.step_fills >= 1, origin, "step_fills", p.step_fills, ">= 1")?;
        let cooldown_ok = p.cooldown_ms <= MAX_COOLDOWN_MS;
        ensure(
            cooldown_ok,
            origin,
            "cooldown_ms",
            p.cooldown_ms,
            "in 0..=604800000",
        )
    }
}

impl Settings for GatePolicy {
    fn check(&self, origin: &str) -> Result<(), ConfigError> {
        self.validate(origin)
    }
}

/// Where a gate is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum GateState {
    Open,
    /// `manual`: by an operator, left only by a command; else by drift,
    /// left on its own after the cooldown when the policy says so.
    Suspended {
        manual: bool,
    },
    /// Publishing at `steps[step]` of the size.
    Recovering {
        step: usize,
    },
    /// Emergency stop.
    Stopped,
}

impl GateState {
    /// The state's label without its details, e.g. `suspended`.
    pub fn name(self) -> &'static str {
        match self {
            GateState::Open => "open",
            GateState::Suspended { .. } => "suspended",
            GateState::Recovering { .. } => "recovering",
            GateState::Stopped => "stopped",
        }
    }
}

impl fmt::Display for GateState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GateState::Suspended { manual: true } => f.write_str("suspended (manual)"),
            GateState::Suspended { manual: false } => f.write_str("suspended (automatic)"),
            GateState::Recovering { step } => write!(f, "recovering (step {step})"),
            other => f.write_str(other.name()),
        }
    }
}

/// An operator's command.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Command {
    Suspend,
    Resume,
    ForceOpen,
    EmergencyStop,
    Release,
}

impl Command {
    /// Every command, in the order errors list them.
    pub const ALL: [Command; 5] = [
        Command::Suspend,
        Command::Resume,
        Command::ForceOpen,
        Command::EmergencyStop,
        Command::Release,
    ];

    /// The command's name, e.g. `force_open`.
    pub fn name(self) -> &'static str {
        match self {
            Command::Suspend => "suspend",
            Command::Resume => "resume",
            Command::ForceOpen => "force_open",
            Command::EmergencyStop => "emergency_stop",
            Command::Release => "release",
        }
    }

    /// Where the command leads from `state`, or `None` when it is not
    /// allowed there (including when it would change nothing).
    fn target(self, state: GateState) -> Option<GateState> {
        use GateState::*;
        match (self, state) {
            (Command::Suspend, Open | Recovering { .. } | Suspended { manual: false }) => {
                Some(Suspended { manual: true })
            }
            (Command::Resume, Suspended { .. }) => Some(Recovering { step: 0 }),
            (Command::ForceOpen, Suspended { .. } | Recovering { .. }) => Some(Open),
            (Command::EmergencyStop, Open | Suspended { .. } | Recovering { .. }) => Some(Stopped),
            (Command::Release, Stopped) => Some(Suspended { manual: true }),
            _ => None,
        }
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A decided change of state, with what the audit log records of it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Transition {
    pub from: GateState,
    pub to: GateState,
    pub reason: String,
    /// Who decided: [`AUTO_ACTOR`] or the operator.
    pub actor: String,
    /// When it was decided, unix milliseconds.
    pub at_ms: i64,
    /// The drift measures it was decided on.
    pub metrics: DriftSnapshot,
}

impl Transition {
    /// Whether the gate leaves suspension to publish again, so the caller
    /// must restart the drift measures before the next evaluation.
    pub fn restarts_drift(&self) -> bool {
        matches!(self.from, GateState::Suspended { .. })
            && matches!(self.to, GateState::Open | GateState::Recovering { .. })
    }
}

/// Why a command or a transition was refused.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum GateError {
    #[error("cannot {command} a gate that is {state}; allowed: {}", allowed_list(allowed))]
    NotAllowed {
        command: Command,
        state: GateState,
        allowed: Vec<Command>,
    },
    #[error("{command} needs a reason")]
    MissingReason { command: Command },
    #[error("a command needs an actor")]
    MissingActor,
    #[error("the transition starts from {from}, but the gate is {state}")]
    Stale { from: GateState, state: GateState },
}

fn allowed_list(allowed: &[Command]) -> String {
    let names: Vec<&str> = allowed.iter().map(|c| c.name()).collect();
    names.join(", ")
}

/// One deployment's gate.
#[derive(Clone, Debug)]
pub struct Gate {
    policy: GatePolicy,
    state: GateState,
    /// When the current state was entered.
    since_ms: i64,
    /// Matched fills counted when the current recovery step began.
    step_base: u64,
}

impl Gate {
    /// An open gate with `policy` (validated by the caller).
    pub fn new(policy: GatePolicy, now_ms: i64) -> Gate {
        Gate::restore(policy, GateState::Open, now_ms)
    }

    /// A gate in `state` since `since_ms`, as the audit log's last entry
    /// says after a restart. A recovery step counts its fills from zero, so
    /// the caller restarts the drift measures with it.
    pub fn restore(policy: GatePolicy, state: GateState, since_ms: i64) -> Gate {
        Gate {
            policy,
            state,
            since_ms,
            step_base: 0,
        }
    }

    pub fn state(&self) -> GateState {
        self.state
    }

    /// When the current state was entered, unix milliseconds.
    pub fn since_ms(&self) -> i64 {
        self.since_ms
    }

    pub fn policy(&self) -> &GatePolicy {
        &self.policy
    }

    /// The factor intents' quantities are multiplied by: 1 open, the step's
    /// factor recovering, 0 suspended or stopped.
    pub fn size_factor(&self) -> f64 {
        match self.state {
            GateState::Open => 1.0,
            GateState::Recovering { step } => self.policy.steps.get(step).copied().unwrap_or(1.0),
            GateState::Suspended { .. } | GateState::Stopped => 0.0,
        }
    }

    /// Whether intents are published.
    pub fn publishes(&self) -> bool {
        matches!(self.state, GateState::Open | GateState::Recovering { .. })
    }

    /// The commands allowed in the current state.
    pub fn allowed(&self) -> Vec<Command> {
        Command::ALL
            .into_iter()
            .filter(|c| c.target(self.state).is_some())
            .collect()
    }

    /// The automatic transition `metrics` call for at `now_ms`, if any.
    pub fn evaluate(&self, metrics: &DriftSnapshot, now_ms: i64) -> Option<Transition> {
        let (to, reason) = match self.state {
            GateState::Open | GateState::Recovering { .. } if metrics.score >= 1.0 => (
                GateState::Suspended { manual: false },
                format!("drift over threshold: {}", metrics.describe_crossed()),
            ),
            GateState::Recovering { step } => self.next_step(step, metrics)?,
            GateState::Suspended { manual: false } => self.after_cooldown(now_ms)?,
            _ => return None,
        };
        Some(self.transition(to, reason, AUTO_ACTOR, metrics, now_ms))
    }

    /// The transition an operator's `command` asks for, or why it is
    /// refused. `force_open` needs a non-empty reason; the others record a
    /// default one when none is given.
    pub fn command(
        &self,
        command: Command,
        actor: &str,
        reason: &str,
        metrics: &DriftSnapshot,
        now_ms: i64,
    ) -> Result<Transition, GateError> {
        let to = command.target(self.state).ok_or_else(|| GateError::NotAllowed {
            command,
            state: self.state,
            allowed: self.allowed(),
        })?;
        if actor.trim().is_empty() {
            return Err(GateError::MissingActor);
        }
        let reason = reason.trim();
        if reason.is_empty() && command == Command::ForceOpen {
            return Err(GateError::MissingReason { command });
        }
        let reason = if reason.is_empty() {
            format!("{command} by {actor}")
        } else {
            reason.to_owned()
        };
        Ok(self.transition(to, reason, actor, metrics, now_ms))
    }

    /// Makes a decided transition take effect. Refused when the gate has
    /// left the state the transition was decided in.
    pub fn apply(&mut self, transition: &Transition) -> Result<(), GateError> {
        if transition.from != self.state {
            return Err(GateError::Stale {
                from: transition.from,
                state: self.state,
            });
        }
        self.state = transition.to;
        self.since_ms = transition.at_ms;
        self.step_base = if transition.restarts_drift() {
            0
        } else {
            transition.metrics.fills_matched
        };
        Ok(())
    }

    /// The next recovery step (or open) once this one has held.
    fn next_step(&self, step: usize, metrics: &DriftSnapshot) -> Option<(GateState, String)> {
        let held = metrics.fills_matched.saturating_sub(self.step_base);
        if held < u64::from(self.policy.step_fills) {
            return None;
        }
        let to = if step + 1 < self.policy.steps.len() {
            GateState::Recovering { step: step + 1 }
        } else {
            GateState::Open
        };
        let factor = self.size_factor();
        let reason = format!("drift under threshold for {held} matched fills at size factor {factor}");
        Some((to, reason))
    }

    /// Recovery from an automatic suspension once the cooldown has passed.
    fn after_cooldown(&self, now_ms: i64) -> Option<(GateState, String)> {
        let cooldown = i64::try_from(self.policy.cooldown_ms).unwrap_or(i64::MAX);
        let over = self.policy.auto_recover && now_ms.saturating_sub(self.since_ms) >= cooldown;
        over.then(|| {
            let reason = format!("cooldown of {} ms over, recovering", self.policy.cooldown_ms);
            (GateState::Recovering { step: 0 }, reason)
        })
    }

    fn transition(
        &self,
        to: GateState,
        reason: String,
        actor: &str,
        metrics: &DriftSnapshot,
        now_ms: i64,
    ) -> Transition {
        Transition {
            from: self.state,
            to,
            reason,
            actor: actor.to_owned(),
            at_ms: now_ms,
            metrics: metrics.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drift::DriftScores;
    use GateState::*;

    /// A snapshot whose price score is `score`, after `fills` matched fills.
    fn metrics(score: f64, fills: u64) -> DriftSnapshot {
        DriftSnapshot {
            price_bps: score * 50.0,
            score,
            fills_matched: fills,
            scores: DriftScores {
                price: score,
                ..DriftScores::default()
            },
            ..DriftSnapshot::default()
        }
    }

    fn gate(state: GateState) -> Gate {
        let policy = GatePolicy::default();
        policy.validate("test").unwrap();
        Gate::restore(policy, state, 1_000)
    }

    /// Evaluates and applies; returns the new state when it changed.
    fn step(g: &mut Gate, m: &DriftSnapshot, now_ms: i64) -> Option<GateState> {
        let t = g.evaluate(m, now_ms)?;
        g.apply(&t).unwrap();
        Some(t.to)
    }

    #[test]
    fn suspends_at_a_score_of_one_not_below() {
        for state in [Open, Recovering { step: 1 }] {
            let g = gate(state);
            assert_eq!(g.evaluate(&metrics(0.99, 0), 2_000), None, "{state}");
            let t = g.evaluate(&metrics(1.0, 0), 2_000).expect("crossed");
            assert_eq!(
                (t.from, t.to, t.actor.as_str(), t.at_ms),
                (state, Suspended { manual: false }, AUTO_ACTOR, 2_000)
            );
            assert_eq!(
                t.reason,
                "drift over threshold: price drift 50.00 bps (1.00× its threshold)"
            );
            assert_eq!(t.metrics, metrics(1.0, 0));
            assert_eq!(g.state(), state, "evaluate decides only");
        }
        for state in [Suspended { manual: true }, Stopped] {
            assert_eq!(gate(state).evaluate(&metrics(5.0, 0), i64::MAX), None, "{state}");
        }
    }

    #[test]
    fn recovers_after_exactly_the_cooldown() {
        let mut g = gate(Open);
        assert_eq!(
            step(&mut g, &metrics(1.5, 3), 10_000),
            Some(Suspended { manual: false })
        );
        assert_eq!((g.size_factor(), g.publishes()), (0.0, false));
        assert_eq!(g.evaluate(&metrics(1.5, 3), 10_000 + 60_000 - 1), None);
        let t = g
            .evaluate(&metrics(1.5, 3), 10_000 + 60_000)
            .expect("cooldown over");
        assert_eq!(t.to, Recovering { step: 0 });
        assert_eq!(t.reason, "cooldown of 60000 ms over, recovering");
        assert!(t.restarts_drift());
        g.apply(&t).unwrap();
        assert_eq!((g.size_factor(), g.publishes()), (0.25, true));
    }

    #[test]
    fn no_automatic_recovery_when_disabled_or_manual() {
        let policy = GatePolicy {
            auto_recover: false,
            ..GatePolicy::default()
        };
        let g = Gate::restore(policy, Suspended { manual: false }, 0);
        assert_eq!(g.evaluate(&metrics(0.0, 0), i64::MAX), None);
        assert_eq!(
            gate(Suspended { manual: true }).evaluate(&metrics(0.0, 0), i64::MAX),
            None
        );
    }

    #[test]
    fn steps_after_step_fills_matched_fills() {
        // Resumed: the tracker restarts, so fills count from 0.
        let mut g = gate(Suspended { manual: false });
        let t = g
            .command(Command::Resume, "ops", "fixed", &metrics(3.0, 40), 5_000)
            .unwrap();
        assert!(t.restarts_drift());
        g.apply(&t).unwrap();
        let mut fills = 0;
        for (state, factor) in [
            (Recovering { step: 0 }, 0.25),
            (Recovering { step: 1 }, 0.5),
            (Recovering { step: 2 }, 1.0),
        ] {
            assert_eq!((g.state(), g.size_factor()), (state, factor));
            assert_eq!(
                g.evaluate(&metrics(0.5, fills + 4), 6_000),
                None,
                "{state}: step_fills − 1"
            );
            fills += 5;
            let t = g.evaluate(&metrics(0.5, fills), 6_000).expect("held");
            assert_eq!(
                t.reason,
                format!("drift under threshold for 5 matched fills at size factor {factor}")
            );
            assert!(!t.restarts_drift());
            g.apply(&t).unwrap();
        }
        assert_eq!((g.state(), g.size_factor(), g.publishes()), (Open, 1.0, true));
        assert_eq!(g.evaluate(&metrics(0.5, 1_000), 7_000), None);
    }

    #[test]
    fn drift_while_recovering_suspends_first() {
        let g = gate(Recovering { step: 0 });
        let t = g.evaluate(&metrics(1.0, 100), 2_000).unwrap();
        assert_eq!(t.to, Suspended { manual: false });
    }

    fn refused(state: GateState, command: Command) -> String {
        let err = gate(state)
            .command(command, "ops", "why", &metrics(0.0, 0), 0)
            .unwrap_err();
        err.to_string()
    }

    #[test]
    fn commands_and_their_targets() {
        let ok = |state, command, to| {
            let t = gate(state)
                .command(command, "ops", "why", &metrics(0.2, 0), 9)
                .unwrap();
            assert_eq!(
                (t.from, t.to, t.actor.as_str(), t.reason.as_str(), t.at_ms),
                (state, to, "ops", "why", 9)
            );
        };
        let manual = Suspended { manual: true };
        let auto = Suspended { manual: false };
        let recovering = Recovering { step: 1 };
        ok(Open, Command::Suspend, manual);
        ok(recovering, Command::Suspend, manual);
        ok(auto, Command::Suspend, manual);
        ok(manual, Command::Resume, Recovering { step: 0 });
        ok(auto, Command::Resume, Recovering { step: 0 });
        ok(manual, Command::ForceOpen, Open);
        ok(recovering, Command::ForceOpen, Open);
        for state in [Open, manual, auto, recovering] {
            ok(state, Command::EmergencyStop, Stopped);
        }
        ok(Stopped, Command::Release, manual);
    }

    #[test]
    fn invalid_commands_name_the_state_and_what_is_allowed() {
        let cases = [
            (Open, Command::Resume, "cannot resume a gate that is open; allowed: suspend, emergency_stop"),
            (Open, Command::ForceOpen, "cannot force_open a gate that is open; allowed: suspend, emergency_stop"),
            (Open, Command::Release, "cannot release a gate that is open; allowed: suspend, emergency_stop"),
            (
                Suspended { manual: true },
                Command::Suspend,
                "cannot suspend a gate that is suspended (manual); allowed: resume, force_open, emergency_stop",
            ),
            (
                Suspended { manual: false },
                Command::Release,
                "cannot release a gate that is suspended (automatic); allowed: suspend, resume, force_open, emergency_stop",
            ),
            (
                Recovering { step: 0 },
                Command::Resume,
                "cannot resume a gate that is recovering (step 0); allowed: suspend, force_open, emergency_stop",
            ),
            (Stopped, Command::Suspend, "cannot suspend a gate that is stopped; allowed: release"),
            (Stopped, Command::Resume, "cannot resume a gate that is stopped; allowed: release"),
            (Stopped, Command::ForceOpen, "cannot force_open a gate that is stopped; allowed: release"),
            (Stopped, Command::EmergencyStop, "cannot emergency_stop a gate that is stopped; allowed: release"),
        ];
        for (state, command, want) in cases {
            assert_eq!(refused(state, command), want);
        }
    }

    #[test]
    fn reasons_and_actors() {
        let g = gate(Suspended { manual: true });
        let m = metrics(0.0, 0);
        let err = g.command(Command::ForceOpen, "ops", "  ", &m, 0).unwrap_err();
        assert_eq!(err.to_string(), "force_open needs a reason");
        let err = g.command(Command::Resume, "", "x", &m, 0).unwrap_err();
        assert_eq!(err.to_string(), "a command needs an actor");
        let t = g.command(Command::Resume, "alice", "", &m, 0).unwrap();
        assert_eq!(t.reason, "resume by alice");
    }

    #[test]
    fn apply_refuses_a_stale_transition() {
        let mut g = gate(Open);
        let suspend = g.evaluate(&metrics(2.0, 0), 5).unwrap();
        let stop = g
            .command(Command::EmergencyStop, "ops", "halt", &metrics(2.0, 0), 6)
            .unwrap();
        g.apply(&stop).unwrap();
        assert_eq!(g.since_ms(), 6);
        let err = g.apply(&suspend).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the transition starts from open, but the gate is stopped"
        );
        assert_eq!(g.state(), Stopped);
    }

    #[test]
    fn force_open_from_suspension_restarts_drift() {
        let t = gate(Suspended { manual: true })
            .command(Command::ForceOpen, "ops", "vendor fixed", &metrics(3.0, 9), 0)
            .unwrap();
        assert!(t.restarts_drift());
        let t = gate(Recovering { step: 1 })
            .command(Command::ForceOpen, "ops", "enough", &metrics(0.1, 9), 0)
            .unwrap();
        assert!(!t.restarts_drift());
        let t = gate(Stopped)
            .command(Command::Release, "ops", "", &metrics(0.1, 9), 0)
            .unwrap();
        assert!(!t.restarts_drift());
    }

    #[test]
    fn states_serialize_tagged() {
        let json =
            serde_json::to_string(&[Open, Suspended { manual: true }, Recovering { step: 2 }, Stopped])
                .unwrap();
        assert_eq!(
            json,
            r#"[{"state":"open"},{"state":"suspended","manual":true},{"state":"recovering","step":2},{"state":"stopped"}]"#
        );
    }

    #[test]
    fn policy_parsing_and_ranges() {
        let p = GatePolicy::from_toml_str("steps = [0.1, 1.0]\nstep_fills = 3", "gate.toml").unwrap();
        assert_eq!(
            (p.steps.as_slice(), p.step_fills, p.cooldown_ms),
            ([0.1, 1.0].as_slice(), 3, DEFAULT_COOLDOWN_MS)
        );
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(GatePolicy::from_json_str(&json, "gate.json").unwrap(), p);
        GatePolicy::from_toml_str("steps = [1.0]", "gate.toml").unwrap();
        let cases = [
            (
                "steps = []",
                "gate.toml: steps = [] is out of range (allowed at least one step, the last 1)",
            ),
            (
                "steps = [0.0, 1.0]",
                "gate.toml: steps[0] = 0 is out of range (allowed in (0, 1] and above the previous step)",
            ),
            (
                "steps = [0.5, 0.5, 1.0]",
                "gate.toml: steps[1] = 0.5 is out of range (allowed in (0, 1] and above the previous step)",
            ),
            (
                "steps = [0.5, 1.5]",
                "gate.toml: steps[1] = 1.5 is out of range (allowed in (0, 1] and above the previous step)",
            ),
            (
                "steps = [0.25, 0.5]",
                "gate.toml: steps[1] = 0.5 is out of range (allowed 1 (the last step is full size))",
            ),
            (
                "step_fills = 0",
                "gate.toml: step_fills = 0 is out of range (allowed >= 1)",
            ),
            (
                "cooldown_ms = 604800001",
                "gate.toml: cooldown_ms = 604800001 is out of range (allowed in 0..=604800000)",
            ),
        ];
        for (text, want) in cases {
            assert_eq!(
                GatePolicy::from_toml_str(text, "gate.toml")
                    .unwrap_err()
                    .to_string(),
                want,
                "{text}"
            );
        }
        let unknown = GatePolicy::from_toml_str("cooldown = 5", "gate.toml").unwrap_err();
        assert!(
            unknown.to_string().contains("unknown field `cooldown`"),
            "{unknown}"
        );
    }
}
