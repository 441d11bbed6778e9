//! Graceful drain: one signal tells every connection to finish up, and the signaller can wait until all have.

use std::convert::Infallible;

use tokio::sync::{mpsc, watch};

/// Held by the owner; `drain` signals and waits.
pub struct Signal {
    tx: watch::Sender<bool>,
    done: mpsc::Receiver<Infallible>,
}

/// Held by every connection; dropping it says "done".
#[derive(Clone, Debug)]
pub struct Watch {
    rx: watch::Receiver<bool>,
    _done: mpsc::Sender<Infallible>,
}

pub fn channel() -> (Signal, Watch) {
    let (tx, rx) = watch::channel(false);
    let (done_tx, done) = mpsc::channel(1);
    (Signal { tx, done }, Watch { rx, _done: done_tx })
}

impl Signal {
    /// Signals every watcher and resolves once all of them are dropped.
    pub async fn drain(mut self) {
        let _ = self.tx.send(true);
        while self.done.recv().await.is_some() {}
    }
}

impl Watch {
    /// Resolves once draining has begun.
    pub async fn signaled(&mut self) {
        let _ = self.rx.wait_for(|d| *d).await;
    }

    pub fn is_draining(&self) -> bool {
        *self.rx.borrow()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn drain_waits_for_every_watch() {
        let (signal, watch) = channel();
        let mut w = watch.clone();
        drop(watch);
        let task = tokio::spawn(async move {
            w.signaled().await;
            drop(w);
        });
        signal.drain().await;
        task.await.unwrap();
    }
}
