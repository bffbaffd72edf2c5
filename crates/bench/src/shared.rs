//! State shared by the connection tasks of one process: the run's phase,
//! live counters, latency recorders, and per room the set of acked seqs.
//!
//! Two counters coordinate the end of a run. `inflight` counts sends not yet
//! answered (ack or error); `waiting` counts members that have not yet
//! received everything acked in their room. The drain phase ends when both
//! reach zero (or at the drain timeout).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::watch;

use crate::accounting::SeqSet;
use crate::mix::KindCounters;
use crate::plan::Plan;
use crate::report::Counters;
use crate::stats::Recorder;

/// Phases of a run, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum Phase {
    /// Connections are being opened; nobody sends.
    Ramp = 0,
    /// Senders send every MSG_INTERVAL.
    Run = 1,
    /// No new sends; waiting for acks and deliveries still in flight.
    Drain = 2,
    /// Every connection closes.
    Stop = 3,
}

impl Phase {
    fn from_u8(v: u8) -> Phase {
        match v {
            0 => Phase::Ramp,
            1 => Phase::Run,
            2 => Phase::Drain,
            _ => Phase::Stop,
        }
    }
}

/// The acked seqs of one room.
pub struct RoomAcks {
    acked: Mutex<SeqSet>,
    /// The largest acked seq.
    pub max_acked: AtomicU64,
}

impl RoomAcks {
    fn new() -> Self {
        Self {
            acked: Mutex::new(SeqSet::above(0)),
            max_acked: AtomicU64::new(0),
        }
    }

    /// Records an ack; false if this seq was acked before (a resend).
    pub fn ack(&self, seq: u64) -> bool {
        let new = self.acked().insert(seq);
        self.max_acked.fetch_max(seq, Ordering::SeqCst);
        new
    }

    pub fn acked(&self) -> MutexGuard<'_, SeqSet> {
        self.acked.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub struct Shared {
    pub plan: Arc<Plan>,
    pub counters: Counters,
    /// Sent, acked and received per operation type.
    pub by_kind: KindCounters,
    /// Indexed by room number (rooms of other workers stay empty).
    pub rooms: Vec<RoomAcks>,
    pub ack_latency: Recorder,
    pub e2e_latency: Recorder,
    errors: Mutex<BTreeMap<String, u64>>,
    phase: AtomicU8,
    phase_tx: watch::Sender<Phase>,
    /// Sends not yet answered.
    pub inflight: AtomicI64,
    /// Members not yet caught up (or given up).
    pub waiting: AtomicI64,
    /// Connections whose first attempt is decided (joined, or failed).
    pub settled: AtomicU64,
    /// Connections open right now.
    pub open: AtomicI64,
}

impl Shared {
    pub fn new(plan: Arc<Plan>) -> anyhow::Result<Self> {
        let rooms = (0..plan.rooms).map(|_| RoomAcks::new()).collect();
        Ok(Self {
            plan,
            counters: Counters::default(),
            by_kind: KindCounters::default(),
            rooms,
            ack_latency: Recorder::new()?,
            e2e_latency: Recorder::new()?,
            errors: Mutex::new(BTreeMap::new()),
            phase: AtomicU8::new(Phase::Ramp as u8),
            phase_tx: watch::channel(Phase::Ramp).0,
            inflight: AtomicI64::new(0),
            waiting: AtomicI64::new(0),
            settled: AtomicU64::new(0),
            open: AtomicI64::new(0),
        })
    }

    pub fn phase(&self) -> Phase {
        Phase::from_u8(self.phase.load(Ordering::SeqCst))
    }

    pub fn set_phase(&self, phase: Phase) {
        self.phase.store(phase as u8, Ordering::SeqCst);
        self.phase_tx.send_replace(phase);
    }

    pub fn phase_watch(&self) -> watch::Receiver<Phase> {
        self.phase_tx.subscribe()
    }

    /// Counts an error of kind `kind` (kept short and of low cardinality:
    /// no addresses, no ids).
    pub fn error(&self, kind: &str) {
        Counters::bump(&self.counters.errors);
        let mut errors = self.errors.lock().unwrap_or_else(|e| e.into_inner());
        match errors.get_mut(kind) {
            Some(n) => *n += 1,
            None => {
                errors.insert(kind.to_string(), 1);
            }
        }
    }

    pub fn error_kinds(&self) -> BTreeMap<String, u64> {
        self.errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}
