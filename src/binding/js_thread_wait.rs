//! Contended `acquire`s of a Node thread, waited on that thread itself (Linux).
//!
//! On the wait runtime a release wakes the runtime's thread, which takes the lock and
//! then wakes the JS thread to resolve the promise: two wake-ups, each tens to
//! hundreds of microseconds on a busy machine, with the lock held meanwhile by a
//! thread that cannot use it (so other processes queue behind a wake-up). Here the JS
//! thread's event loop watches an inotify instance of its own (a libuv poll handle),
//! and the waits are polled on that thread: a release wakes it once, and the lock is
//! taken by the thread that will use it. Timers and cancellation still come from the
//! wait runtime; they wake the JS thread through a libuv async handle. A wait that
//! ends is settled in that same callback, its promise's reactions run by a napi
//! callback scope: a thread-safe function would cost the loop another turn first.
//! While any wait is pending, the poll handle is referenced, so the wait keeps its
//! process alive as a pending `fs` call does.
//!
//! libuv is reached through the symbols Node exports, looked up at run time. Under
//! Bun or Deno, where they are missing, or where anything fails to start, waits run
//! on the wait runtime instead.

use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::{c_int, c_void, CStr};
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll, Wake, Waker};

use napi::bindgen_prelude::{Env, JsObjectValue, Object, ToNapiValue};
use napi::sys;

use super::errors as js_error;
use super::lock_types::NativeGrant;
use crate::engine::release_events::ReleaseEvents;
use crate::engine::runtime::runtime;
use crate::engine::LockError;

use crate::engine::manager::PendingGrant;

/// The libuv calls this needs, from the running process.
struct Uv {
    handle_size: unsafe extern "C" fn(c_int) -> usize,
    poll_init: unsafe extern "C" fn(*mut c_void, *mut c_void, c_int) -> c_int,
    poll_start: unsafe extern "C" fn(*mut c_void, c_int, PollCallback) -> c_int,
    poll_stop: unsafe extern "C" fn(*mut c_void) -> c_int,
    async_init: unsafe extern "C" fn(*mut c_void, *mut c_void, AsyncCallback) -> c_int,
    async_send: unsafe extern "C" fn(*mut c_void) -> c_int,
    ref_: unsafe extern "C" fn(*mut c_void),
    unref: unsafe extern "C" fn(*mut c_void),
    close: unsafe extern "C" fn(*mut c_void, Option<CloseCallback>),
}

type PollCallback = unsafe extern "C" fn(*mut c_void, c_int, c_int);
type AsyncCallback = unsafe extern "C" fn(*mut c_void);
type CloseCallback = unsafe extern "C" fn(*mut c_void);

// libuv's `uv_handle_type` and `uv_poll_event` values, stable since libuv 1.0.
const UV_ASYNC: c_int = 1;
const UV_POLL: c_int = 8;
const UV_READABLE: c_int = 1;

fn uv() -> Option<&'static Uv> {
    static UV: OnceLock<Option<Uv>> = OnceLock::new();
    UV.get_or_init(|| {
        // SAFETY: each field's type spells out the C signature of the libuv function
        // it is looked up by.
        unsafe {
            Some(Uv {
                handle_size: symbol(c"uv_handle_size")?,
                poll_init: symbol(c"uv_poll_init")?,
                poll_start: symbol(c"uv_poll_start")?,
                poll_stop: symbol(c"uv_poll_stop")?,
                async_init: symbol(c"uv_async_init")?,
                async_send: symbol(c"uv_async_send")?,
                ref_: symbol(c"uv_ref")?,
                unref: symbol(c"uv_unref")?,
                close: symbol(c"uv_close")?,
            })
        }
    })
    .as_ref()
}

/// The function `name` of the running process, as a function pointer of type `F`.
///
/// # Safety
/// `F` must be the pointer type of that function's C signature.
unsafe fn symbol<F: Copy>(name: &CStr) -> Option<F> {
    assert_eq!(size_of::<F>(), size_of::<*mut c_void>());
    let symbol = libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr());
    (!symbol.is_null()).then(|| std::mem::transmute_copy::<*mut c_void, F>(&symbol))
}

/// A libuv handle's memory, zeroed, sized as this libuv says.
fn new_handle(uv: &Uv, kind: c_int) -> *mut c_void {
    // SAFETY: plain allocation; freed by `free_handle` once libuv has closed it.
    unsafe { libc::calloc(1, (uv.handle_size)(kind)) }
}

unsafe extern "C" fn free_handle(handle: *mut c_void) {
    libc::free(handle);
}

/// What other threads touch: the woken waits, and the async handle that wakes the JS
/// thread (`None` once the thread's environment is gone).
struct Shared {
    woken: Mutex<Vec<u64>>,
    wake_js: Mutex<Option<Handle>>,
}

#[derive(Clone, Copy)]
struct Handle(*mut c_void);

// SAFETY: `uv_async_send` is the one libuv call made on this pointer off the JS
// thread, and libuv documents it as thread-safe; the mutex orders it with the close.
unsafe impl Send for Handle {}

struct WaitWaker {
    id: u64,
    shared: Arc<Shared>,
}

impl Wake for WaitWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        lock(&self.shared.woken).push(self.id);
        if let (Some(handle), Some(uv)) = (*lock(&self.shared.wake_js), uv()) {
            // SAFETY: the handle is open while it is in `wake_js`.
            unsafe { (uv.async_send)(handle.0) };
        }
    }
}

struct Waiting {
    wait: PendingGrant,
    /// The promise `spawn` returned, settled on this thread when the wait ends.
    deferred: sys::napi_deferred,
}

/// One JS thread's waits and its two libuv handles.
struct Waits {
    env: sys::napi_env,
    /// The async context promises are settled in from a libuv callback (`settle`).
    async_context: sys::napi_async_context,
    events: Arc<ReleaseEvents>,
    shared: Arc<Shared>,
    waiting: HashMap<u64, Waiting>,
    next_id: u64,
    poll: *mut c_void,
    wake_js: *mut c_void,
    /// libuv reported an error on the poll handle and stopped it: waits already here
    /// go on (timers and the safety tick still wake them), new ones go elsewhere.
    failed: bool,
}

enum Slot {
    Untried,
    Unavailable,
    Running(Waits),
}

thread_local! {
    static WAITS: RefCell<Slot> = const { RefCell::new(Slot::Untried) };
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// The release events this thread's waits are woken by, starting them on the first
/// wait; `None` when waits here must run on the wait runtime instead.
pub fn events(env: &Env) -> Option<Arc<ReleaseEvents>> {
    WAITS.with(|slot| {
        let mut slot = slot.borrow_mut();
        if let Slot::Untried = *slot {
            match start(env) {
                Ok(waits) => *slot = Slot::Running(waits),
                Err(Unstarted::Never) => *slot = Slot::Unavailable,
                Err(Unstarted::NotNow) => return None, // out of resources: next wait retries
            }
        }
        match &*slot {
            Slot::Running(waits) if !waits.failed => Some(Arc::clone(&waits.events)),
            _ => None,
        }
    })
}

/// Runs `wait` on this thread; the returned promise settles with its outcome. Call
/// only after `events` returned `Some` on this thread.
pub fn spawn<'env>(env: &'env Env, wait: PendingGrant) -> napi::Result<Object<'env>> {
    let mut deferred = std::ptr::null_mut();
    let mut promise = std::ptr::null_mut();
    // SAFETY: a JS call on this thread, with its env.
    napi::check_status!(
        unsafe { sys::napi_create_promise(env.raw(), &mut deferred, &mut promise) },
        "lockwright: could not create a promise"
    )?;
    WAITS.with(|slot| match &mut *slot.borrow_mut() {
        Slot::Running(waits) => {
            let id = waits.next_id;
            waits.next_id += 1;
            waits.waiting.insert(id, Waiting { wait, deferred });
            waits.keep_alive();
            // Polled now, not on the next turn of the loop: it watches for the release
            // and starts its timer before this call returns.
            let _runtime = runtime().enter();
            if let Some((deferred, outcome)) = waits.poll_one(id) {
                // In a call from JavaScript, whose return runs the reactions.
                // SAFETY: this thread's env, during a JS call.
                unsafe { settle(env.raw(), deferred, outcome) };
            }
        }
        _ => {
            let error = napi::Error::from_reason("lockwright: no JS-thread waits here");
            // SAFETY: as above; the deferred is settled once.
            unsafe {
                let value = napi::JsError::from(error).into_value(env.raw());
                sys::napi_reject_deferred(env.raw(), deferred, value);
            }
        }
    });
    Ok(Object::from_raw(env.raw(), promise))
}

impl WaitWaker {
    fn into_waker(self) -> Waker {
        Waker::from(Arc::new(self))
    }
}

/// Why a thread has no JS-thread waits.
enum Unstarted {
    /// Not Node, or no libuv: it never will.
    Never,
    /// Out of something (inotify instances, memory): a later wait tries again.
    NotNow,
}

fn start(env: &Env) -> Result<Waits, Unstarted> {
    use Unstarted::{Never, NotNow};
    // Bun and Deno answer to some libuv names with stubs that abort: Node only.
    let global = env.get_global().map_err(|_| Never)?;
    for other_runtime in ["Bun", "Deno"] {
        if global.has_named_property(other_runtime).unwrap_or(true) {
            return Err(Never);
        }
    }
    let uv = uv().ok_or(Never)?;
    let uv_loop = env.get_uv_event_loop().map_err(|_| Never)?.cast::<c_void>();
    let async_context = async_context(env).ok_or(NotNow)?;
    let events = ReleaseEvents::polled().ok_or(NotNow)?;
    let fd = events.fd().ok_or(NotNow)?;
    let poll = new_handle(uv, UV_POLL);
    let wake_js = new_handle(uv, UV_ASYNC);
    if poll.is_null() || wake_js.is_null() {
        // SAFETY: free(NULL) is a no-op; neither handle was given to libuv.
        unsafe {
            libc::free(poll);
            libc::free(wake_js);
        }
        return Err(NotNow);
    }
    // SAFETY: fresh zeroed handles of the sizes libuv asked for, on this thread's loop.
    // A handle libuv initialised is closed (and then freed) if a later step fails.
    unsafe {
        if (uv.poll_init)(uv_loop, poll, fd) != 0 {
            libc::free(poll);
            libc::free(wake_js);
            return Err(NotNow);
        }
        if (uv.async_init)(uv_loop, wake_js, on_woken) != 0 {
            (uv.close)(poll, Some(free_handle));
            libc::free(wake_js);
            return Err(NotNow);
        }
        let hooked = env.add_env_cleanup_hook((), |()| stop()).is_ok();
        if !hooked || (uv.poll_start)(poll, UV_READABLE, on_readable) != 0 {
            (uv.close)(poll, Some(free_handle));
            (uv.close)(wake_js, Some(free_handle));
            return Err(NotNow);
        }
        // Unreferenced while no wait is pending (see `keep_alive`).
        (uv.unref)(poll);
        (uv.unref)(wake_js);
    }
    Ok(Waits {
        env: env.raw(),
        async_context,
        events,
        shared: Arc::new(Shared {
            woken: Mutex::new(Vec::new()),
            wake_js: Mutex::new(Some(Handle(wake_js))),
        }),
        waiting: HashMap::new(),
        next_id: 1,
        poll,
        wake_js,
        failed: false,
    })
}

/// The thread's environment is going away: close the handles, drop the waits (their
/// promises go with the environment).
fn stop() {
    // Called from napi's cleanup, which must not unwind either.
    let _ = std::panic::catch_unwind(stop_now);
}

fn stop_now() {
    let Some(uv) = uv() else {
        return;
    };
    WAITS.with(|slot| {
        let previous = std::mem::replace(&mut *slot.borrow_mut(), Slot::Unavailable);
        if let Slot::Running(waits) = previous {
            *lock(&waits.shared.wake_js) = None;
            // SAFETY: made by `napi_async_init` on this env, destroyed once.
            unsafe { sys::napi_async_destroy(waits.env, waits.async_context) };
            // SAFETY: open handles of this thread's loop; freed in their close callbacks.
            unsafe {
                (uv.poll_stop)(waits.poll);
                (uv.close)(waits.poll, Some(free_handle));
                (uv.close)(waits.wake_js, Some(free_handle));
            }
        }
    });
}

unsafe extern "C" fn on_readable(_handle: *mut c_void, status: c_int, _events: c_int) {
    // Unwinding into libuv would abort the process.
    let _ = std::panic::catch_unwind(|| {
        if status < 0 {
            // libuv has stopped the handle after an error; see `Waits::failed`.
            WAITS.with(|slot| {
                if let Ok(mut slot) = slot.try_borrow_mut() {
                    if let Slot::Running(waits) = &mut *slot {
                        waits.failed = true;
                    }
                }
            });
        }
        run(status >= 0);
    });
}

unsafe extern "C" fn on_woken(_handle: *mut c_void) {
    let _ = std::panic::catch_unwind(|| run(false));
}

/// Reads the release events (when the inotify descriptor is readable) and polls every
/// woken wait, then settles the ones that ended. A libuv callback must not unwind, so
/// a panic in a wait settles that wait with `EPANIC`.
fn run(readable: bool) {
    let settling = WAITS.with(|slot| {
        let Ok(mut slot) = slot.try_borrow_mut() else {
            return None;
        };
        let Slot::Running(waits) = &mut *slot else {
            return None;
        };
        // Timers inside the waits belong to the wait runtime.
        let _runtime = runtime().enter();
        if readable {
            let events = Arc::clone(&waits.events);
            let _ = std::panic::catch_unwind(AssertUnwindSafe(|| events.drain()));
        }
        let mut ended = Vec::new();
        loop {
            let woken = std::mem::take(&mut *lock(&waits.shared.woken));
            if woken.is_empty() {
                break;
            }
            ended.extend(woken.into_iter().filter_map(|id| waits.poll_one(id)));
        }
        Some((waits.env, waits.async_context, ended))
    });
    // Settled once the waits are let go of: the promises' reactions run JavaScript,
    // which may start waits of its own.
    if let Some((env, async_context, ended)) = settling {
        if !ended.is_empty() {
            settle_from_loop(env, async_context, ended);
        }
    }
}

impl Waits {
    /// A pending wait keeps the process alive, as a pending `fs` call does: its poll
    /// handle is referenced while any wait is, and only then.
    fn keep_alive(&self) {
        let Some(uv) = uv() else {
            return;
        };
        // SAFETY: the poll handle is open while the waits run.
        unsafe {
            if self.waiting.is_empty() {
                (uv.unref)(self.poll);
            } else {
                (uv.ref_)(self.poll);
            }
        }
    }

    /// Polls one wait; one that ended is removed and returned, to be settled.
    fn poll_one(&mut self, id: u64) -> Option<Ended> {
        let Some(waiting) = self.waiting.get_mut(&id) else {
            return None; // settled already; a late wake-up
        };
        let waker = WaitWaker {
            id,
            shared: Arc::clone(&self.shared),
        }
        .into_waker();
        let polled = std::panic::catch_unwind(AssertUnwindSafe(|| {
            waiting.wait.as_mut().poll(&mut Context::from_waker(&waker))
        }));
        let outcome = match polled {
            Ok(Poll::Pending) => return None,
            Ok(Poll::Ready(outcome)) => outcome,
            Err(payload) => Err(LockError::panicked("waiting", payload.as_ref())),
        };
        let done = self.waiting.remove(&id)?;
        self.keep_alive();
        Some((done.deferred, outcome))
    }
}

/// How a wait ended.
type Outcome = crate::engine::Result<crate::engine::manager::LockGrant>;

/// A wait that ended: its promise, and how it ended.
type Ended = (sys::napi_deferred, Outcome);

/// Settles ended waits' promises from a libuv callback, in the turn of the loop that
/// ended them (a thread-safe function would cost the loop another turn first), inside
/// a callback scope whose close runs their reactions, as any I/O callback's would.
fn settle_from_loop(env: sys::napi_env, async_context: sys::napi_async_context, ended: Vec<Ended>) {
    // SAFETY: this thread's env, alive while its waits are (the cleanup hook stops them
    // first); scopes are closed in reverse order of opening.
    unsafe {
        let mut handles = std::ptr::null_mut();
        if sys::napi_open_handle_scope(env, &mut handles) != sys::Status::napi_ok {
            return;
        }
        let mut resource = std::ptr::null_mut();
        let mut callback_scope = std::ptr::null_mut();
        let scoped = sys::napi_create_object(env, &mut resource) == sys::Status::napi_ok
            && sys::napi_open_callback_scope(env, resource, async_context, &mut callback_scope)
                == sys::Status::napi_ok;
        for (deferred, outcome) in ended {
            settle(env, deferred, outcome);
        }
        if scoped {
            sys::napi_close_callback_scope(env, callback_scope);
        }
        sys::napi_close_handle_scope(env, handles);
    }
}

/// Resolves or rejects one promise, once.
///
/// # Safety
/// On the JS thread of `env`, inside a handle scope; `deferred` not yet settled.
unsafe fn settle(env: sys::napi_env, deferred: sys::napi_deferred, outcome: Outcome) {
    let settled = match outcome.map(NativeGrant::from) {
        Ok(grant) => NativeGrant::to_napi_value(env, grant)
            .map_err(|e| napi::JsError::from(e).into_value(env)),
        Err(e) => {
            let error = js_error::to_js(&Env::from_raw(env), e);
            Err(napi::JsError::from(error).into_value(env))
        }
    };
    match settled {
        Ok(value) => sys::napi_resolve_deferred(env, deferred, value),
        Err(value) => sys::napi_reject_deferred(env, deferred, value),
    };
}

/// The async context settled promises are attributed to (async hooks see one
/// `lockwright:wait` resource per thread).
fn async_context(env: &Env) -> Option<sys::napi_async_context> {
    let raw = env.raw();
    let mut resource = std::ptr::null_mut();
    let mut name = std::ptr::null_mut();
    let mut context = std::ptr::null_mut();
    // SAFETY: calls on this thread's env, during a JS call.
    let made = unsafe {
        sys::napi_create_object(raw, &mut resource) == sys::Status::napi_ok
            && sys::napi_create_string_utf8(raw, c"lockwright:wait".as_ptr(), 15, &mut name)
                == sys::Status::napi_ok
            && sys::napi_async_init(raw, resource, name, &mut context) == sys::Status::napi_ok
    };
    made.then_some(context)
}
