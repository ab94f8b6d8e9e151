//! Group commit: callers that arrive together share one transaction.
//!
//! Every write of the hub appends to the one hash-chained audit trail, whose
//! head is locked until commit, so one transaction per caller makes callers
//! take turns at a commit each. A [`GroupCommit`] instead runs `workers`
//! tasks; each takes whatever jobs are waiting (at least one, at most
//! `max_batch`), runs them as one batch and answers every caller after it.
//! An idle hub answers at once (a batch of one); a busy one pays one commit
//! for many callers. The MLLP ingress, the FHIR writes and the audit writer
//! all batch this way; what a batch does is theirs.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::{Mutex, mpsc, oneshot};

/// The batcher stopped (the hub is shutting down) before it answered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the {0} stopped")]
pub struct Stopped(pub &'static str);

type Job<J, A> = (J, oneshot::Sender<A>);

/// Hands jobs of type `J` to batch workers; each caller gets its `A`.
pub struct GroupCommit<J, A> {
    name: &'static str,
    jobs: mpsc::Sender<Job<J, A>>,
}

impl<J, A> Clone for GroupCommit<J, A> {
    fn clone(&self) -> Self {
        GroupCommit {
            name: self.name,
            jobs: self.jobs.clone(),
        }
    }
}

impl<J, A> std::fmt::Debug for GroupCommit<J, A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCommit").field("name", &self.name).finish()
    }
}

impl<J: Send + 'static, A: Send + 'static> GroupCommit<J, A> {
    /// Starts `workers` tasks (at least one) running `batch` on up to
    /// `max_batch` jobs at a time. `batch` answers each job, in order; a job
    /// left without an answer hears [`Stopped`]. `name` says what stopped.
    pub fn start<F, Fut>(name: &'static str, max_batch: usize, workers: usize, batch: F) -> Self
    where
        F: Fn(Vec<J>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Vec<A>> + Send,
    {
        let max_batch = max_batch.max(1);
        let workers = workers.max(1);
        let (jobs, rx) = mpsc::channel::<Job<J, A>>(max_batch * workers * 2);
        let rx = Arc::new(Mutex::new(rx));
        let batch = Arc::new(batch);
        for _ in 0..workers {
            let (rx, batch) = (rx.clone(), batch.clone());
            tokio::spawn(async move {
                loop {
                    let taken = {
                        // One worker takes at a time; the others run their batch meanwhile.
                        let mut rx = rx.lock().await;
                        let Some(first) = rx.recv().await else { return };
                        let mut taken = vec![first];
                        while taken.len() < max_batch {
                            match rx.try_recv() {
                                Ok(job) => taken.push(job),
                                Err(_) => break,
                            }
                        }
                        taken
                    };
                    let (jobs, replies): (Vec<J>, Vec<oneshot::Sender<A>>) = taken.into_iter().unzip();
                    let answers = batch(jobs).await;
                    for (reply, answer) in replies.into_iter().zip(answers) {
                        let _ = reply.send(answer);
                    }
                }
            });
        }
        GroupCommit { name, jobs }
    }

    /// Submits `job` and waits for its batch's answer.
    pub async fn submit(&self, job: J) -> Result<A, Stopped> {
        let (reply, answer) = oneshot::channel();
        self.jobs.send((job, reply)).await.map_err(|_| Stopped(self.name))?;
        answer.await.map_err(|_| Stopped(self.name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn callers_waiting_together_share_a_batch_and_each_gets_its_answer() {
        let sizes = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = sizes.clone();
        let gc = GroupCommit::start("doubler", 8, 1, move |jobs: Vec<u32>| {
            let seen = seen.clone();
            async move {
                seen.lock().expect("sizes").push(jobs.len());
                // Slow enough that the other callers queue behind the first batch.
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                jobs.into_iter().map(|j| j * 2).collect()
            }
        });
        let calls: Vec<_> = (0..20u32).map(|i| (i, gc.clone())).collect();
        let answers = futures_join(calls).await;
        assert_eq!(answers, (0..20u32).map(|i| i * 2).collect::<Vec<_>>());
        let sizes = sizes.lock().expect("sizes").clone();
        assert_eq!(sizes.iter().sum::<usize>(), 20);
        assert!(sizes.iter().all(|&n| n <= 8), "{sizes:?}");
        assert!(sizes.len() < 20, "some callers shared a batch: {sizes:?}");
    }

    #[tokio::test]
    async fn a_job_the_batch_leaves_unanswered_hears_stopped() {
        let gc = GroupCommit::start("forgetful", 4, 2, |_jobs: Vec<u8>| async { Vec::<u8>::new() });
        assert_eq!(gc.submit(1).await, Err(Stopped("forgetful")));
    }

    async fn futures_join(calls: Vec<(u32, GroupCommit<u32, u32>)>) -> Vec<u32> {
        let handles: Vec<_> = calls
            .into_iter()
            .map(|(i, gc)| tokio::spawn(async move { gc.submit(i).await.expect("answer") }))
            .collect();
        let mut out = Vec::new();
        for h in handles {
            out.push(h.await.expect("task"));
        }
        out
    }
}
