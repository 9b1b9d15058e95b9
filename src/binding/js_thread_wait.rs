//! Contended `acquire`s of a Node thread, waited on that thread itself (Linux).
//!
//! On the wait runtime a release wakes the runtime's thread, which takes the lock and
//! then wakes the JS thread to resolve the promise: two wake-ups, each tens to
//! hundreds of microseconds on a busy machine, with the lock held meanwhile by a
//! thread that cannot use it (so other processes queue behind a wake-up). Here the JS
//! thread's event loop watches an inotify instance of its own (a libuv poll handle),
//! and the waits are polled on that thread: a release wakes it once, and the lock is
//! taken by the thread that will use it. Timers and cancellation still come from the
//! wait runtime; they wake the JS thread through a libuv async handle.
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

use napi::bindgen_prelude::{Env, JsObjectValue, Object};
use napi::JsDeferred;

use super::errors as js_error;
use super::lock_types::NativeGrant;
use crate::engine::release_events::ReleaseEvents;
use crate::engine::runtime::runtime;
use crate::engine::LockError;

use crate::engine::manager::PendingGrant;
type Resolve = Box<dyn FnOnce(Env) -> napi::Result<NativeGrant> + Send>;

/// The libuv calls this needs, from the running process.
struct Uv {
    handle_size: unsafe extern "C" fn(c_int) -> usize,
    poll_init: unsafe extern "C" fn(*mut c_void, *mut c_void, c_int) -> c_int,
    poll_start: unsafe extern "C" fn(*mut c_void, c_int, PollCallback) -> c_int,
    poll_stop: unsafe extern "C" fn(*mut c_void) -> c_int,
    async_init: unsafe extern "C" fn(*mut c_void, *mut c_void, AsyncCallback) -> c_int,
    async_send: unsafe extern "C" fn(*mut c_void) -> c_int,
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
    deferred: JsDeferred<NativeGrant, Resolve>,
}

/// One JS thread's waits and its two libuv handles.
struct Waits {
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
    let (deferred, promise) = env.create_deferred::<NativeGrant, Resolve>()?;
    WAITS.with(|slot| match &mut *slot.borrow_mut() {
        Slot::Running(waits) => {
            let id = waits.next_id;
            waits.next_id += 1;
            waits.waiting.insert(id, Waiting { wait, deferred });
            // Polled now, not on the next turn of the loop: it watches for the release
            // and starts its timer before this call returns.
            let _runtime = runtime().enter();
            waits.poll_one(id);
        }
        _ => deferred.reject(napi::Error::from_reason(
            "lockwright: no JS-thread waits here",
        )),
    });
    Ok(promise)
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
        // Unreferenced: a pending wait's promise keeps the process alive, not these.
        (uv.unref)(poll);
        (uv.unref)(wake_js);
    }
    Ok(Waits {
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
/// woken wait. A libuv callback must not unwind, so a panic in a wait settles that
/// wait with `EPANIC`.
fn run(readable: bool) {
    WAITS.with(|slot| {
        let Ok(mut slot) = slot.try_borrow_mut() else {
            return;
        };
        let Slot::Running(waits) = &mut *slot else {
            return;
        };
        // Timers inside the waits belong to the wait runtime.
        let _runtime = runtime().enter();
        if readable {
            let events = Arc::clone(&waits.events);
            let _ = std::panic::catch_unwind(AssertUnwindSafe(|| events.drain()));
        }
        loop {
            let woken = std::mem::take(&mut *lock(&waits.shared.woken));
            if woken.is_empty() {
                return;
            }
            for id in woken {
                waits.poll_one(id);
            }
        }
    });
}

impl Waits {
    fn poll_one(&mut self, id: u64) {
        let Some(waiting) = self.waiting.get_mut(&id) else {
            return; // settled already; a late wake-up
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
            Ok(Poll::Pending) => return,
            Ok(Poll::Ready(outcome)) => outcome,
            Err(payload) => Err(LockError::panicked("waiting", payload.as_ref())),
        };
        let Some(done) = self.waiting.remove(&id) else {
            return;
        };
        done.deferred.resolve(Box::new(move |env| {
            outcome
                .map(NativeGrant::from)
                .map_err(|e| js_error::to_js(&env, e))
        }));
    }
}
