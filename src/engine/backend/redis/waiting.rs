//! Waiting without polling. One pub/sub connection per backend (opened by its first
//! wait) listens on the channels of the locks someone waits for. A release hands the
//! lock to the waiter whose turn it is in the same script and says so on the channel
//! (`=token:now:member`): that waiter wakes holding it, the others sleep on. A
//! message that names a waiter without a grant (or `*`, ours after a reconnect) makes
//! it try again. A release nobody made (a holder that died) is caught by the
//! fallback timer: the first lease ahead of the waiter running out, when its attempt
//! clears the dead and hands the lock on.

use std::collections::HashMap;
use std::future::pending;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use redis::Client;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use super::grant::{release_quietly, Attempt, Claim, RedisGrant, Undo};
use super::{Shared, UNAVAILABLE};
use crate::engine::error::{code, LockError, Result};

/// Backoff between attempts while Redis cannot be reached.
const MIN_PAUSE: Duration = Duration::from_millis(25);
const MAX_PAUSE: Duration = Duration::from_millis(500);

/// How long a channel nobody watches stays subscribed: a process that takes a busy
/// lock again and again waits on it with no SUBSCRIBE round trip, and queues in its
/// first attempt.
const LINGER: Duration = Duration::from_secs(1);

#[derive(Default)]
struct Hub {
    channels: HashMap<String, Channel>,
    /// Queued waiters by member: where a release's grant for them goes.
    grants: HashMap<String, oneshot::Sender<Handoff>>,
    connected: bool,
}

/// A grant a release made for a queued waiter: the token and Redis's clock at it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Handoff {
    pub token: u64,
    pub now: u64,
}

/// `=token:now:member`, as `promote` in common.lua publishes it.
fn handoff(message: &str) -> Option<(Handoff, &str)> {
    let mut parts = message.strip_prefix('=')?.splitn(3, ':');
    let token = parts.next()?.parse().ok()?;
    let now = parts.next()?.parse().ok()?;
    Some((Handoff { token, now }, parts.next()?))
}

struct Channel {
    /// A count of messages that are not grants, and the last one's hint: who may
    /// try (`*`: anyone). Only the latest matters: it describes the latest state.
    bumps: watch::Sender<(u64, String)>,
    watchers: usize,
    /// Redis confirmed the subscription on the listener's current connection.
    subscribed: bool,
    /// Since when nobody watches it; the listener unsubscribes it after `LINGER`.
    idle_since: Option<Instant>,
}

enum Command {
    Subscribe(String, oneshot::Sender<()>),
}

pub(crate) struct Wakeups {
    hub: Arc<Mutex<Hub>>,
    commands: mpsc::UnboundedSender<Command>,
    /// What the listener needs, until the first wait starts it: a backend that
    /// never waits opens no pub/sub connection.
    idle: Mutex<Option<Idle>>,
    /// True while the listener is connected.
    online: watch::Receiver<bool>,
    stop: CancellationToken,
    connect_timeout: Duration,
    response_timeout: Duration,
}

struct Idle {
    client: Client,
    inbox: mpsc::UnboundedReceiver<Command>,
    online: watch::Sender<bool>,
}

fn lock(hub: &Mutex<Hub>) -> MutexGuard<'_, Hub> {
    hub.lock().unwrap_or_else(|e| e.into_inner())
}

/// Anyone may try: the hint of our own bumps after a reconnect, when messages may
/// have been missed.
pub(crate) const ANYONE: &str = "*";

fn bump(hub: &Hub, channel: Option<&str>, hint: &str) {
    for (name, entry) in &hub.channels {
        if channel.is_none_or(|c| c == name) {
            entry.bumps.send_modify(|(n, last)| {
                *n += 1;
                hint.clone_into(last);
            });
        }
    }
}

impl Wakeups {
    /// The listener starts with the first wait; it ends when this drops.
    pub fn new(client: Client, connect_timeout: Duration, response_timeout: Duration) -> Wakeups {
        let (commands, inbox) = mpsc::unbounded_channel();
        let (online_tx, online) = watch::channel(false);
        Wakeups {
            hub: Arc::new(Mutex::new(Hub::default())),
            commands,
            idle: Mutex::new(Some(Idle {
                client,
                inbox,
                online: online_tx,
            })),
            online,
            stop: CancellationToken::new(),
            connect_timeout,
            response_timeout,
        }
    }

    /// Spawns the listener (on the current tokio runtime) unless it runs already;
    /// true when this call started it.
    pub fn ensure_started(&self) -> bool {
        let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner()).take();
        let Some(idle) = idle else {
            return false;
        };
        tokio::spawn(listen(
            idle,
            Arc::clone(&self.hub),
            self.stop.clone(),
            self.connect_timeout,
        ));
        true
    }

    /// Listens on `channel` for `member`'s grant now, if Redis confirmed that channel
    /// already (another wait in this process, or one that just ended): no round trip.
    pub fn watching(&self, channel: &str, member: &str) -> Option<Watch> {
        let mut hub = lock(&self.hub);
        let subscribed = hub.connected && hub.channels.get(channel).is_some_and(|c| c.subscribed);
        subscribed.then(|| self.register(&mut hub, channel, member))
    }

    fn register(&self, hub: &mut Hub, channel: &str, member: &str) -> Watch {
        let (granted, grants) = oneshot::channel();
        hub.grants.insert(member.to_string(), granted);
        let entry = hub
            .channels
            .entry(channel.to_string())
            .or_insert_with(|| Channel {
                bumps: watch::channel((0, ANYONE.to_string())).0,
                watchers: 0,
                subscribed: false,
                idle_since: None,
            });
        entry.watchers += 1;
        entry.idle_since = None;
        Watch {
            bumps: entry.bumps.subscribe(),
            grants: Some(grants),
            member: member.to_string(),
            channel: channel.to_string(),
            hub: Arc::clone(&self.hub),
        }
    }

    /// Starts listening on `channel` for `member`'s grant; returns once Redis
    /// confirmed the subscription (or at once while the listener is disconnected: it
    /// subscribes to every watched channel when it reconnects, then wakes them all).
    pub async fn watch(&self, channel: &str, member: &str) -> Watch {
        if self.ensure_started() {
            // The first wait gives the new listener its connect time, so it too
            // returns subscribed.
            let mut online = self.online.clone();
            let _ = tokio::time::timeout(self.connect_timeout, online.wait_for(|up| *up)).await;
        }
        let (watch, subscribe) = {
            let mut hub = lock(&self.hub);
            let watch = self.register(&mut hub, channel, member);
            let subscribed = hub.channels.get(channel).is_some_and(|c| c.subscribed);
            (watch, hub.connected && !subscribed)
        };
        if subscribe {
            let (ack, acked) = oneshot::channel();
            if self
                .commands
                .send(Command::Subscribe(channel.to_string(), ack))
                .is_ok()
            {
                let _ = tokio::time::timeout(self.response_timeout, acked).await;
            }
        }
        watch
    }
}

impl Wakeups {
    /// Whether the listener is connected now (tests wait for it).
    #[cfg(test)]
    pub fn listening(&self) -> bool {
        lock(&self.hub).connected
    }
}

impl Drop for Wakeups {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A waiter's view of one channel, and of the grant made for it.
pub(crate) struct Watch {
    bumps: watch::Receiver<(u64, String)>,
    /// `None` once it settled.
    grants: Option<oneshot::Receiver<Handoff>>,
    member: String,
    channel: String,
    hub: Arc<Mutex<Hub>>,
}

impl Watch {
    /// Forgets earlier bumps: call before an attempt, so any change after it wakes.
    fn mark(&mut self) {
        self.bumps.borrow_and_update();
    }

    /// Waits for the next message that is not a grant; returns its hint.
    #[cfg(test)]
    async fn changed(&mut self) -> String {
        if self.bumps.changed().await.is_err() {
            return pending().await;
        }
        self.bumps.borrow_and_update().1.clone()
    }
}

/// Waits for a release to hand us the lock (a `Watch`'s `grants`).
async fn granted(grants: &mut Option<oneshot::Receiver<Handoff>>) -> Handoff {
    let Some(receiver) = grants.as_mut() else {
        return pending().await;
    };
    let outcome = receiver.await;
    *grants = None;
    match outcome {
        Ok(handoff) => handoff,
        Err(_) => pending().await,
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let mut hub = lock(&self.hub);
        hub.grants.remove(&self.member);
        if let Some(entry) = hub.channels.get_mut(&self.channel) {
            entry.watchers -= 1;
            if entry.watchers == 0 {
                // The listener unsubscribes it if nobody watches it again by then.
                entry.idle_since = Some(Instant::now());
            }
        }
    }
}

/// The listener: (re)connects, subscribes, and turns messages into grants and
/// bumps. All (un)subscriptions go through it in order, so an unsubscribe never
/// overtakes a later subscribe to the same channel.
async fn listen(
    idle: Idle,
    hub: Arc<Mutex<Hub>>,
    stop: CancellationToken,
    connect_timeout: Duration,
) {
    let Idle {
        client,
        mut inbox,
        online,
    } = idle;
    let mut pause = MIN_PAUSE;
    loop {
        let connected = tokio::select! {
            _ = stop.cancelled() => return,
            connected = tokio::time::timeout(connect_timeout, client.get_async_pubsub()) => connected,
        };
        let Ok(Ok(pubsub)) = connected else {
            // Waiters do not wait for acknowledgements meanwhile; drop the requests.
            while inbox.try_recv().is_ok() {}
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(pause) => {}
            }
            pause = (pause * 2).min(MAX_PAUSE);
            continue;
        };
        pause = MIN_PAUSE;
        let (mut sink, mut stream) = pubsub.split();
        let names: Vec<String> = {
            let mut hub = lock(&hub);
            hub.connected = true;
            hub.channels.keys().cloned().collect()
        };
        online.send_replace(true);
        // One channel per SUBSCRIBE: one confirmation per request.
        let mut subscribed = true;
        for name in &names {
            let ok = sink.subscribe(name).await.is_ok();
            if ok {
                confirmed(&hub, name);
            }
            subscribed &= ok;
        }
        if subscribed {
            // Changes while we were away went unheard: everyone looks again.
            bump(&lock(&hub), None, ANYONE);
            let mut sweeps = tokio::time::interval(LINGER);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    command = inbox.recv() => match command {
                        None => return,
                        Some(Command::Subscribe(channel, ack)) => {
                            let ok = sink.subscribe(&channel).await.is_ok();
                            if ok {
                                confirmed(&hub, &channel);
                            }
                            let _ = ack.send(());
                            if !ok {
                                break;
                            }
                        }
                    },
                    _ = sweeps.tick() => {
                        for channel in lingered(&hub) {
                            let _ = sink.unsubscribe(&channel).await;
                        }
                    }
                    message = stream.next() => match message {
                        Some(message) => {
                            let text = message.get_payload::<String>().unwrap_or_else(|_| ANYONE.into());
                            let mut hub = lock(&hub);
                            match handoff(&text) {
                                // Nobody here waits for it: another process's grant.
                                Some((grant, member)) => if let Some(waiter) = hub.grants.remove(member) {
                                    let _ = waiter.send(grant);
                                },
                                None => bump(&hub, Some(message.get_channel_name()), &text),
                            }
                        }
                        None => break,
                    },
                }
            }
        }
        online.send_replace(false);
        let mut hub = lock(&hub);
        hub.connected = false;
        for channel in hub.channels.values_mut() {
            channel.subscribed = false;
        }
        bump(&hub, None, ANYONE);
    }
}

fn confirmed(hub: &Mutex<Hub>, channel: &str) {
    if let Some(entry) = lock(hub).channels.get_mut(channel) {
        entry.subscribed = true;
    }
}

/// Forgets the channels nobody watched for `LINGER`; returns them, to unsubscribe.
fn lingered(hub: &Mutex<Hub>) -> Vec<String> {
    let mut hub = lock(hub);
    let gone: Vec<String> = hub
        .channels
        .iter()
        .filter(|(_, c)| c.idle_since.is_some_and(|at| at.elapsed() >= LINGER))
        .map(|(name, _)| name.clone())
        .collect();
    for name in &gone {
        hub.channels.remove(name);
    }
    gone
}

/// A fair, blocking acquire: one quick attempt, then a place in the queue, woken by
/// the grant a release hands it and bounded by `deadline` (`None`: forever) and
/// `cancel`.
pub(crate) async fn acquire(
    shared: &Arc<Shared>,
    claim: &Claim,
    deadline: Option<Instant>,
    cancel: CancellationToken,
) -> Result<RedisGrant> {
    // Our place in the queue (or a grant whose reply was never read) goes back if
    // the caller drops this future...
    let mut place = Undo {
        shared,
        claim,
        armed: true,
    };
    let outcome = wait_turn(shared, claim, deadline, cancel).await;
    place.armed = false;
    if outcome.is_err() {
        // ...and, when the wait failed, now: the caller's next step (or its
        // runtime's end) must not find it there. Briefly bounded, then left to
        // the background.
        let bound = shared.conn.config.response_timeout.min(UNDO_WAIT);
        if !matches!(
            tokio::time::timeout(bound, claim.undo(shared)).await,
            Ok(Ok(()))
        ) {
            release_quietly(shared, &claim.keys, &claim.lock_id, &claim.member);
        }
    }
    outcome
}

/// How long a failed wait may take to give its place back before it returns.
const UNDO_WAIT: Duration = Duration::from_millis(100);

/// The least time an acquire's first attempt is given for its reply, however short
/// its timeout: a round trip to a server that answers takes far less.
const FIRST_REPLY: Duration = Duration::from_millis(100);

async fn wait_turn(
    shared: &Arc<Shared>,
    claim: &Claim,
    deadline: Option<Instant>,
    cancel: CancellationToken,
) -> Result<RedisGrant> {
    // Already subscribed: the first attempt takes a place in line, whose grant we hear.
    let mut watch = shared.wakeups.watching(&claim.keys.channel, &claim.member);
    // Whether Redis answered at all, and its last failure: a timeout after failures
    // is EUNAVAILABLE, not ETIMEOUT.
    let mut answered = false;
    let mut failure: Option<LockError> = None;
    let mut pause = MIN_PAUSE;
    let mut first = true;
    // The waiter renews its own place this often, so a dead waiter drops out.
    let refresh = Duration::from_millis((claim.lease_ms / 3).max(1));
    // When our place was last renewed (the send of an attempt that queued us, and
    // was answered): a grant a release makes for us lasts as long as that place.
    let mut place_renewed: Option<Instant> = None;
    loop {
        if let Some(watch) = watch.as_mut() {
            watch.mark();
        }
        let queue = watch.is_some();
        // The first attempt always gets its reply time: a deadline already past, or
        // shorter than a round trip, means one attempt, whose refusal is ETIMEOUT,
        // not a Redis that "gave no answer". A server that does not answer at all
        // (stopped, blackholed) still ends the acquire by its deadline, or this
        // floor after it.
        let sent = Instant::now();
        let deadline_now = match deadline {
            Some(at) if first => Some(at.max(sent + FIRST_REPLY)),
            deadline => deadline,
        };
        let again = !std::mem::replace(&mut first, false);
        let outcome = tokio::select! {
            biased;
            _ = cancel.cancelled() => return Err(aborted(claim)),
            _ = until(deadline_now) => return Err(gave_up(claim, answered, failure)),
            outcome = claim.attempt(shared, queue) => outcome,
        };
        let nap = match outcome {
            Ok(Attempt::Granted(mut grant)) => {
                grant.waited = again && (queue || answered);
                return Ok(*grant);
            }
            Ok(Attempt::Refused { retry_in }) => {
                answered = true;
                failure = None;
                pause = MIN_PAUSE;
                if queue {
                    place_renewed = Some(sent);
                }
                if watch.is_none() {
                    // Subscribe, then queue at once: a release after the queued
                    // attempt hands the lock to us in a message we hear.
                    let subscribing = shared.wakeups.watch(&claim.keys.channel, &claim.member);
                    tokio::select! {
                        biased;
                        _ = cancel.cancelled() => return Err(aborted(claim)),
                        _ = until(deadline) => return Err(gave_up(claim, answered, failure)),
                        subscribed = subscribing => watch = Some(subscribed),
                    }
                    continue;
                }
                retry_in.map_or(refresh, |at| (at + Duration::from_millis(1)).min(refresh))
            }
            // A retry with the same claim is safe: if this attempt was granted and
            // only its reply lost, the next one gets the same grant back.
            Err(e) if e.is(UNAVAILABLE) => {
                failure = Some(e);
                let nap = pause;
                pause = (pause * 2).min(MAX_PAUSE);
                nap
            }
            Err(e) => return Err(e),
        };
        // `biased`: a grant that comes with the deadline or the abort is given back
        // (by the caller's undo), as one that came after.
        let handoff = tokio::select! {
            biased;
            _ = cancel.cancelled() => return Err(aborted(claim)),
            _ = until(deadline) => return Err(gave_up(claim, answered, failure)),
            handoff = until_called(watch.as_mut(), &claim.member, nap) => handoff,
        };
        if let (Some(handoff), Some(renewed)) = (handoff, place_renewed) {
            match handed_over(shared, claim, handoff, renewed).await {
                // Stopped past our place's lease, we hear of a grant that lapsed and
                // went on without us: not a lock we lost, so wait on.
                Err(e) if e.is(code::COMPROMISED) => place_renewed = None,
                outcome => return outcome,
            }
        }
    }
}

/// A grant a release made for us: ours without an attempt. Its lease is our place's,
/// so it runs out a lease after our last renewal of the place; if less than a renewal
/// period of it is left (renewals ran late), it is renewed before it is handed on.
async fn handed_over(
    shared: &Arc<Shared>,
    claim: &Claim,
    handoff: Handoff,
    place_renewed: Instant,
) -> Result<RedisGrant> {
    let lease = Duration::from_millis(claim.lease_ms);
    let mut grant = claim.granted(shared, handoff.token, handoff.now, place_renewed + lease);
    grant.waited = true;
    if grant.lease_expires() < Instant::now() + grant.renew_period() {
        if let Err(lost) = grant.renew().await {
            if lost.is(code::COMPROMISED) {
                grant.forget(); // the caller waits on under the same claim
            }
            return Err(lost);
        }
    }
    Ok(grant)
}

/// Sleeps for `nap`, until a release hands us the lock (`Some`), or until a message
/// names `member` or everyone (try again). One that names another waiter is not for
/// us: only that one can get in.
async fn until_called(watch: Option<&mut Watch>, member: &str, nap: Duration) -> Option<Handoff> {
    let Some(watch) = watch else {
        tokio::time::sleep(nap).await;
        return None;
    };
    let Watch { bumps, grants, .. } = watch;
    let called = async {
        loop {
            if bumps.changed().await.is_err() {
                return pending().await;
            }
            let hint = bumps.borrow_and_update().1.clone();
            if hint == ANYONE || hint == member {
                return;
            }
        }
    };
    tokio::select! {
        handoff = granted(grants) => Some(handoff),
        _ = called => None,
        _ = tokio::time::sleep(nap) => None,
    }
}

async fn until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => pending().await,
    }
}

fn aborted(claim: &Claim) -> LockError {
    LockError::new(
        code::ABORTED,
        format!("The wait for the Redis lock '{}' was aborted", claim.name),
        Some(std::path::Path::new(&claim.name)),
    )
}

fn gave_up(claim: &Claim, answered: bool, failure: Option<LockError>) -> LockError {
    let path = Some(std::path::Path::new(&claim.name));
    match failure {
        Some(cause) => LockError::new(
            UNAVAILABLE,
            format!(
                "EUNAVAILABLE: could not reach Redis for the lock '{}' before the timeout: {}",
                claim.name, cause.message
            ),
            path,
        ),
        None if !answered => LockError::new(
            UNAVAILABLE,
            format!(
                "EUNAVAILABLE: Redis gave no answer for the lock '{}' before the timeout",
                claim.name
            ),
            path,
        ),
        None => LockError::new(
            code::TIMEOUT,
            format!(
                "ETIMEOUT: timed out waiting for the Redis lock '{}'",
                claim.name
            ),
            path,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::backend::redis::test_server::TestRedis;

    async fn publish(client: &Client, channel: &str) -> i64 {
        let Ok(mut con) = client.get_multiplexed_async_connection().await else {
            return -1;
        };
        redis::cmd("PUBLISH")
            .arg(channel)
            .arg("1")
            .query_async(&mut con)
            .await
            .unwrap_or(-1)
    }

    /// Waits until `channel` has `listeners` subscribers.
    async fn until_listeners(client: &Client, channel: &str, listeners: i64) {
        let start = Instant::now();
        while publish(client, channel).await != listeners {
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "{channel} never had {listeners} listeners"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_listener_resubscribes_after_a_restart_and_unsubscribes_the_unwatched() {
        let Some(mut server) = TestRedis::start() else {
            return;
        };
        let client = Client::open(server.url()).unwrap();
        let timeout = Duration::from_millis(300);
        let wakeups = Wakeups::new(client.clone(), timeout, timeout);
        let (mut a, b) = (
            wakeups.watch("a", "x:1").await,
            wakeups.watch("b", "x:2").await,
        );
        // Watched before the listener connected: subscribed when it does.
        until_listeners(&client, "a", 1).await;
        until_listeners(&client, "b", 1).await;
        // Once connected, `watch` returns only when Redis confirmed.
        let _c = wakeups.watch("c", "x:3").await;
        assert_eq!(
            publish(&client, "c").await,
            1,
            "subscribed before watch returned"
        );
        a.mark();
        publish(&client, "a").await;
        tokio::time::timeout(Duration::from_secs(2), a.changed())
            .await
            .expect("woken");

        server.kill();
        server.launch();
        until_listeners(&client, "a", 1).await;
        until_listeners(&client, "b", 1).await;
        a.mark();
        publish(&client, "a").await;
        tokio::time::timeout(Duration::from_secs(2), a.changed())
            .await
            .expect("woken after the restart");

        drop(b);
        until_listeners(&client, "b", 0).await;
        assert_eq!(publish(&client, "a").await, 1);
    }
}
