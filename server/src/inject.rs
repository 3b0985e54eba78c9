//! Crash injection for crash-survival tests (`inject-crash <n> [point]`, debug shell and
//! privileged XS_CONTROL): arms a crash during the n-th request handled from the next step
//! on, at one point of the request pipeline.
//!
//! The server does not crash by itself: at the armed point [`crate::Server::step`] stops and
//! returns [`crate::ServerError::InjectedCrash`] with everything of the step after that point
//! left undone (no append, no sync, no publish, as the point says). The platform then crashes
//! for real: the unikernel panics (a warm restart recovers from the log), the hosted daemon
//! drops the server and recovers from its database, exactly as after a journal failure.
//!
//! Arming takes effect from the step after the one that armed it, so the arming request's own
//! reply is durable and transmitted before any injected crash: a crash can never re-run the
//! arming request (which would arm again and loop). The arming is not persisted.

use core::fmt;

/// Where in the pipeline of the chosen request the crash happens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrashPoint {
    /// The request was applied in memory; its commit was not appended.
    BeforeAppend,
    /// Its commit was appended (not yet durable).
    AfterAppend,
    /// The step's group commit is durable; nothing was transmitted.
    AfterSync,
    /// The step's replies and events were transmitted and notified.
    AfterReply,
    /// One of the four above, chosen from the clock when the request is reached.
    Random,
}

impl CrashPoint {
    /// Every point with its shell name.
    pub const ALL: [(CrashPoint, &'static str); 5] = [
        (CrashPoint::BeforeAppend, "before-append"),
        (CrashPoint::AfterAppend, "after-append"),
        (CrashPoint::AfterSync, "after-sync"),
        (CrashPoint::AfterReply, "after-reply"),
        (CrashPoint::Random, "random"),
    ];

    /// The shell name.
    pub fn name(self) -> &'static str {
        CrashPoint::ALL
            .iter()
            .find(|(point, _)| *point == self)
            .map_or("?", |(_, name)| name)
    }

    /// Parses a shell name.
    pub fn parse(name: &str) -> Option<CrashPoint> {
        CrashPoint::ALL
            .iter()
            .find(|(_, point_name)| *point_name == name)
            .map(|(point, _)| *point)
    }

    /// Resolves `Random` with `entropy` (any varying number, e.g. the clock).
    pub fn resolve(self, entropy: u64) -> CrashPoint {
        if self != CrashPoint::Random {
            return self;
        }
        // splitmix64 finaliser: low clock bits alone are not uniform.
        let mut mixed = entropy.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mixed = (mixed ^ (mixed >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        mixed = (mixed ^ (mixed >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        mixed ^= mixed >> 31;
        CrashPoint::ALL[(mixed % 4) as usize].0
    }
}

impl fmt::Display for CrashPoint {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.name())
    }
}

/// Why `inject-crash` was refused (shown to the caller; nothing is armed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InjectError {
    /// Usage: `inject-crash <n> [point]`.
    Usage,
    /// `n` must be a number >= 1.
    BadCount,
    /// Unknown point name.
    BadPoint,
}

impl fmt::Display for InjectError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InjectError::Usage => formatter.write_str(USAGE),
            InjectError::BadCount => formatter.write_str("inject-crash: <n> must be >= 1"),
            InjectError::BadPoint => formatter.write_str(
                "inject-crash: point is one of before-append, after-append, after-sync, \
                 after-reply, random",
            ),
        }
    }
}

/// One-line usage.
pub const USAGE: &str =
    "usage: inject-crash <n> [before-append|after-append|after-sync|after-reply|random]";

/// An armed crash: `Some` request count and point.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Armed {
    /// The crash happens during the `countdown`-th request from now (>= 1).
    pub countdown: u64,
    /// Where.
    pub point: CrashPoint,
}

/// Parses the arguments after `inject-crash` (`<n> [point]`, default `random`).
pub fn parse_arguments(words: &[&str]) -> Result<Armed, InjectError> {
    let (count, point) = match words {
        [count] => (*count, "random"),
        [count, point] => (*count, *point),
        _ => return Err(InjectError::Usage),
    };
    let countdown = count.parse::<u64>().map_err(|_| InjectError::BadCount)?;
    if countdown == 0 {
        return Err(InjectError::BadCount);
    }
    let point = CrashPoint::parse(point).ok_or(InjectError::BadPoint)?;
    Ok(Armed { countdown, point })
}

/// The injection state of one server (see the module doc).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CrashInjector {
    /// Armed by the current step: becomes `active` when the next step starts.
    pending: Option<Armed>,
    /// Counting requests.
    active: Option<Armed>,
    /// The request being processed is the chosen one: crash at this point.
    due: Option<CrashPoint>,
}

impl CrashInjector {
    /// Arms (replacing any earlier arming).
    pub fn arm(&mut self, armed: Armed) {
        self.pending = Some(armed);
        self.active = None;
        self.due = None;
    }

    /// What is armed, if anything.
    pub fn armed(&self) -> Option<Armed> {
        self.pending.or(self.active)
    }

    /// Start of a step: an arming of the previous step starts counting.
    pub fn step_started(&mut self) {
        if let Some(armed) = self.pending.take() {
            self.active = Some(armed);
        }
    }

    /// A request is about to be applied; true when it is the chosen one (the point is then
    /// due, resolved with `entropy` if random).
    pub fn request_started(&mut self, entropy: u64) -> bool {
        let Some(armed) = &mut self.active else {
            return false;
        };
        armed.countdown -= 1;
        if armed.countdown > 0 {
            return false;
        }
        self.due = Some(armed.point.resolve(entropy));
        self.active = None;
        true
    }

    /// True (once) when the due crash is at `point`.
    pub fn take_if_due(&mut self, point: CrashPoint) -> bool {
        if self.due == Some(point) {
            self.due = None;
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_parse_and_default_to_random() {
        assert_eq!(
            parse_arguments(&["3"]),
            Ok(Armed {
                countdown: 3,
                point: CrashPoint::Random
            })
        );
        assert_eq!(
            parse_arguments(&["1", "after-sync"]).map(|armed| armed.point),
            Ok(CrashPoint::AfterSync)
        );
        assert_eq!(parse_arguments(&["0"]), Err(InjectError::BadCount));
        assert_eq!(parse_arguments(&["x"]), Err(InjectError::BadCount));
        assert_eq!(parse_arguments(&["1", "later"]), Err(InjectError::BadPoint));
        assert_eq!(parse_arguments(&[]), Err(InjectError::Usage));
    }

    #[test]
    fn arming_counts_from_the_next_step_and_fires_once() {
        let mut injector = CrashInjector::default();
        injector.arm(parse_arguments(&["2", "after-append"]).unwrap());
        // Requests of the arming step do not count.
        assert!(!injector.request_started(0));
        injector.step_started();
        assert!(!injector.request_started(0));
        assert!(injector.request_started(0));
        assert!(!injector.take_if_due(CrashPoint::BeforeAppend));
        assert!(injector.take_if_due(CrashPoint::AfterAppend));
        assert!(!injector.take_if_due(CrashPoint::AfterAppend));
        assert!(!injector.request_started(0));
        assert_eq!(injector.armed(), None);
    }

    #[test]
    fn random_resolves_to_every_concrete_point() {
        let mut seen = [false; 4];
        for entropy in 0..64 {
            let point = CrashPoint::Random.resolve(entropy);
            let index = CrashPoint::ALL
                .iter()
                .position(|(candidate, _)| *candidate == point)
                .unwrap();
            assert!(index < 4);
            seen[index] = true;
        }
        assert_eq!(seen, [true; 4]);
    }
}
