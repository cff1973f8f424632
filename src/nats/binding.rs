//! A handle to something on the center that this node may not have reached yet: a leaf that
//! starts while its center is away serves its region from what it remembers, and binds to the
//! center's bucket and audit log once they answer (docs/architecture.md, "A region on its own").
//! Until then every call through the handle fails at once with [`CallError::Unbound`].

use std::sync::OnceLock;

use tokio::sync::Notify;

use super::CallError;

pub(crate) struct Binding<T> {
    value: OnceLock<T>,
    bound: Notify,
}

impl<T> Binding<T> {
    /// Not bound yet.
    pub(crate) fn unbound() -> Self {
        Self { value: OnceLock::new(), bound: Notify::new() }
    }

    /// What the handle is bound to, or [`CallError::Unbound`] for the call `op`.
    pub(crate) fn get(&self, op: &'static str) -> Result<&T, CallError> {
        self.value.get().ok_or(CallError::Unbound { op })
    }

    pub(crate) fn is_bound(&self) -> bool {
        self.value.get().is_some()
    }

    /// Binds the handle, once; a second value is dropped (the first bind stays).
    pub(crate) fn bind(&self, value: T) {
        let _ = self.value.set(value);
        self.bound.notify_waiters();
    }

    /// Completes once the handle is bound.
    pub(crate) async fn wait(&self) -> &T {
        loop {
            let bound = self.bound.notified();
            if let Some(value) = self.value.get() {
                return value;
            }
            bound.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{sync::Arc, time::Duration};

    use super::*;

    #[tokio::test]
    async fn calls_fail_until_bound_and_waiters_wake_when_it_is() {
        let binding = Arc::new(Binding::<u32>::unbound());
        assert!(matches!(binding.get("get"), Err(CallError::Unbound { op: "get" })));
        assert!(binding.get("get").unwrap_err().refused(), "not tried: nothing went out");
        let waiter = tokio::spawn({
            let binding = binding.clone();
            async move { *binding.wait().await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        binding.bind(7);
        binding.bind(8);
        assert_eq!(tokio::time::timeout(Duration::from_secs(1), waiter).await.unwrap().unwrap(), 7);
        assert_eq!(*binding.get("get").unwrap(), 7);
    }
}
