//! A handler's panic becomes a 500 with the envelope, logged, and counted like any answer:
//! [`Guarded`] catches it in the route's `call` and in every poll of its future. The observer
//! ([`super::observe`]) wraps each route in it, so that the panic is also in the metrics and
//! the access log. (tower-http's `CatchPanic` did this outside the observer, and boxed every
//! answer's body, twice with axum's own: two allocations per request.)

use std::{
    any::Any,
    convert::Infallible,
    future::Future,
    panic::{AssertUnwindSafe, catch_unwind},
    pin::Pin,
    task::{Context, Poll},
};

use axum::response::{IntoResponse, Response};

use super::ApiError;

pin_project_lite::pin_project! {
    /// A route's future, or the answer to a `call` that panicked.
    pub(super) struct Guarded<F> {
        #[pin]
        answer: Option<F>,
        failed: Option<Response>,
    }
}

impl<F> Guarded<F> {
    /// The future `call` makes, unless `call` panics.
    pub(super) fn call(call: impl FnOnce() -> F) -> Self {
        match catch_unwind(AssertUnwindSafe(call)) {
            Ok(answer) => Self { answer: Some(answer), failed: None },
            Err(panic) => Self { answer: None, failed: Some(panicked(panic)) },
        }
    }
}

impl<F: Future<Output = Result<Response, Infallible>>> Future for Guarded<F> {
    type Output = Response;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Response> {
        let this = self.project();
        let Some(answer) = this.answer.as_pin_mut() else {
            return Poll::Ready(this.failed.take().expect("polled after done"));
        };
        // A future that panicked is not polled again: the answer is ready.
        match catch_unwind(AssertUnwindSafe(|| answer.poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(Ok(response))) => Poll::Ready(response),
            Err(panic) => Poll::Ready(panicked(panic)),
        }
    }
}

/// A handler's panic: logged, answered 500 with the envelope.
fn panicked(panic: Box<dyn Any + Send>) -> Response {
    let what = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_default();
    tracing::error!(panic = %what, "handler panicked");
    ApiError::Internal.into_response()
}

#[cfg(test)]
mod tests {
    use axum::{body::to_bytes, http::StatusCode};

    use super::*;

    async fn body(response: Response) -> (StatusCode, String) {
        let status = response.status();
        (status, String::from_utf8(to_bytes(response.into_body(), 1 << 16).await.unwrap().to_vec()).unwrap())
    }

    #[tokio::test]
    async fn a_panic_in_the_call_or_in_the_future_answers_500_with_the_envelope() {
        let fine = Guarded::call(|| async { Ok::<_, Infallible>(StatusCode::ACCEPTED.into_response()) });
        assert_eq!(fine.await.status(), StatusCode::ACCEPTED);
        let in_call =
            Guarded::call(|| -> std::future::Ready<Result<Response, Infallible>> { panic!("in call") });
        let in_future = Guarded::call(|| async {
            tokio::task::yield_now().await;
            if true {
                panic!("in the future");
            }
            Ok::<_, Infallible>(StatusCode::OK.into_response())
        });
        for answer in [body(in_call.await).await, body(in_future.await).await] {
            assert_eq!(answer.0, StatusCode::INTERNAL_SERVER_ERROR);
            assert!(answer.1.contains("\"success\":false"), "{}", answer.1);
        }
    }
}
