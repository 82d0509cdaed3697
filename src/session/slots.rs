//! `client.user_connection_limit` for the whole node: each user's connections are counted by
//! one worker, the user's home (`owner_of` of the user id, as channels have owners), which a
//! connect asks for a slot before it completes and the session's cleanup gives it back to.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use ahash::AHashMap;

use crate::runtime::worker::{Msg, Worker};
use crate::shard::owner_of;

/// The connection counts of the users whose home is this worker.
#[derive(Default)]
struct UserSlots(RefCell<AHashMap<Arc<str>, u32>>);

fn slots(w: &Worker) -> Rc<UserSlots> {
    w.local(|_| UserSlots::default())
}

/// Takes one of `user`'s `limit` connection slots; false when all are taken.
pub(super) async fn take(w: &Rc<Worker>, user: &Arc<str>, limit: usize) -> bool {
    let user = user.clone();
    let home = owner_of(&user, w.workers);
    w.ask(home, move |w, answer| {
        let slots = slots(w);
        let mut m = slots.0.borrow_mut();
        let n = m.entry(user).or_default();
        let ok = (*n as usize) < limit;
        if ok {
            *n += 1;
        }
        answer.send(w, ok);
    })
    .await
}

/// Gives back a slot taken by [`take`].
pub(super) fn give_back(w: &Rc<Worker>, user: Arc<str>) {
    let home = owner_of(&user, w.workers);
    let job = move |w: &Rc<Worker>| {
        let slots = slots(w);
        let mut m = slots.0.borrow_mut();
        if let Some(n) = m.get_mut(&user) {
            *n -= 1;
            if *n == 0 {
                m.remove(&user);
            }
        }
    };
    if home == w.id {
        job(w);
    } else {
        w.send(home, Msg::Job(Box::new(job)));
    }
}
