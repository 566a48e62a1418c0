//! Which waiting calls may start: each function runs at most its own
//! concurrency of calls, each owner (a tenant, or the operator) at most its
//! share across all its functions, so that one tenant cannot take every
//! VM the host has. An owner's waiting calls start in the order they came,
//! whichever of its functions they call.

use std::collections::{HashMap, VecDeque};

/// Whose functions: a tenant's name, or `None` for the operator's.
pub(super) type Owner = Option<String>;

#[derive(Debug, Default)]
pub(super) struct Queues {
    funcs: HashMap<i64, FuncQueue>,
    /// Calls running per owner.
    running: HashMap<Owner, usize>,
    /// Orders calls across an owner's functions.
    next: u64,
}

#[derive(Debug)]
struct FuncQueue {
    owner: Owner,
    running: usize,
    /// Calls waiting, each with the order it came in.
    waiting: VecDeque<(u64, String)>,
}

impl Queues {
    /// Calls of `func` running and waiting.
    pub fn load(&self, func: i64) -> (usize, usize) {
        self.funcs
            .get(&func)
            .map_or((0, 0), |f| (f.running, f.waiting.len()))
    }

    fn queue_of(&mut self, func: i64, owner: &Owner) -> &mut FuncQueue {
        self.funcs.entry(func).or_insert_with(|| FuncQueue {
            owner: owner.clone(),
            running: 0,
            waiting: VecDeque::new(),
        })
    }

    /// Calls of `owner`'s functions running.
    pub fn running(&self, owner: &Owner) -> usize {
        self.running.get(owner).copied().unwrap_or(0)
    }

    /// Queues call `id` of `owner`'s function `func`, last.
    pub fn push(&mut self, func: i64, owner: &Owner, id: String) {
        let order = self.next;
        self.next += 1;
        self.queue_of(func, owner).waiting.push_back((order, id));
    }

    /// `owner`'s functions with calls waiting.
    pub fn waiting_funcs(&self, owner: &Owner) -> Vec<i64> {
        self.funcs
            .iter()
            .filter(|(_, f)| &f.owner == owner && !f.waiting.is_empty())
            .map(|(id, _)| *id)
            .collect()
    }

    /// Takes the calls of `owner`'s functions that may start now, oldest
    /// first, counting them running: each function within its concurrency
    /// (`max_of`; `None` for a function gone, whose calls are forgotten),
    /// the owner within `max_owner`.
    pub fn start(
        &mut self,
        owner: &Owner,
        max_owner: usize,
        max_of: impl Fn(i64) -> Option<usize>,
    ) -> Vec<(i64, String)> {
        let mut started = Vec::new();
        for func in self.waiting_funcs(owner) {
            if max_of(func).is_none() {
                self.forget(func);
            }
        }
        loop {
            if self.running(owner) >= max_owner {
                break;
            }
            let next = self
                .funcs
                .iter()
                .filter(|(id, f)| {
                    &f.owner == owner && max_of(**id).is_some_and(|max| f.running < max)
                })
                .filter_map(|(id, f)| f.waiting.front().map(|(order, _)| (*order, *id)))
                .min();
            let Some((_, func)) = next else {
                break;
            };
            let queue = self.funcs.get_mut(&func).expect("just found");
            let (_, id) = queue.waiting.pop_front().expect("just seen");
            queue.running += 1;
            *self.running.entry(owner.clone()).or_default() += 1;
            started.push((func, id));
        }
        started
    }

    /// Counts a call of `owner`'s function `func` running that did not
    /// start through the queue (one a stopped hulld left running).
    pub fn adopt(&mut self, func: i64, owner: &Owner) {
        self.queue_of(func, owner).running += 1;
        *self.running.entry(owner.clone()).or_default() += 1;
    }

    /// A call of `owner`'s function `func` ended.
    pub fn ended(&mut self, func: i64, owner: &Owner) {
        if let Some(queue) = self.funcs.get_mut(&func) {
            queue.running = queue.running.saturating_sub(1);
            if queue.running == 0 && queue.waiting.is_empty() {
                self.funcs.remove(&func);
            }
        }
        if let Some(running) = self.running.get_mut(owner) {
            *running = running.saturating_sub(1);
            if *running == 0 {
                self.running.remove(owner);
            }
        }
    }

    /// Drops the waiting calls of a function that is gone; its running
    /// ones still end.
    fn forget(&mut self, func: i64) {
        if let Some(queue) = self.funcs.get_mut(&func) {
            queue.waiting.clear();
            if queue.running == 0 {
                self.funcs.remove(&func);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acme() -> Owner {
        Some("acme".into())
    }

    fn ids(started: &[(i64, String)]) -> Vec<&str> {
        started.iter().map(|(_, id)| id.as_str()).collect()
    }

    #[test]
    fn an_owner_runs_at_most_its_share_across_its_functions_in_arrival_order() {
        let mut queues = Queues::default();
        for (func, id) in [(1, "a"), (2, "b"), (1, "c"), (2, "d"), (3, "e")] {
            queues.push(func, &acme(), id.into());
        }
        queues.push(9, &None, "op".into());
        let per_func = |_| Some(10);
        assert_eq!(ids(&queues.start(&acme(), 2, per_func)), ["a", "b"]);
        assert_eq!(queues.start(&acme(), 2, per_func), []);
        assert_eq!(queues.running(&acme()), 2);
        assert_eq!((queues.load(1), queues.load(2)), ((1, 1), (1, 1)));
        // Another owner's calls are not held back by acme's.
        assert_eq!(ids(&queues.start(&None, 2, per_func)), ["op"]);
        queues.ended(2, &acme());
        assert_eq!(ids(&queues.start(&acme(), 2, per_func)), ["c"]);
        queues.ended(1, &acme());
        queues.ended(1, &acme());
        assert_eq!(ids(&queues.start(&acme(), 2, per_func)), ["d", "e"]);
        for func in [2, 3] {
            queues.ended(func, &acme());
        }
        assert_eq!(queues.running(&acme()), 0);
        assert!(queues.funcs.keys().all(|f| *f == 9), "{queues:?}");
    }

    #[test]
    fn a_function_at_its_own_concurrency_lets_the_owner_s_next_call_start() {
        let mut queues = Queues::default();
        for (func, id) in [(1, "a"), (1, "b"), (2, "c")] {
            queues.push(func, &acme(), id.into());
        }
        let max = |func| Some(if func == 1 { 1 } else { 5 });
        assert_eq!(ids(&queues.start(&acme(), 10, max)), ["a", "c"]);
        assert_eq!(queues.load(1), (1, 1));
        queues.ended(1, &acme());
        assert_eq!(ids(&queues.start(&acme(), 10, max)), ["b"]);
    }

    #[test]
    fn a_removed_function_s_waiting_calls_are_forgotten() {
        let mut queues = Queues::default();
        queues.push(1, &acme(), "a".into());
        queues.push(2, &acme(), "b".into());
        let started = queues.start(&acme(), 10, |func| (func == 2).then_some(1));
        assert_eq!(ids(&started), ["b"]);
        assert_eq!(queues.load(1), (0, 0));
        assert_eq!(queues.waiting_funcs(&acme()), Vec::<i64>::new());
    }
}
