//! The last message on a subject, asked of the stream's leader (a direct get may be answered by a
//! replica that lags): `None` when the subject has none.

use async_nats::jetstream::{
    message::StreamMessage,
    stream::{LastRawMessageError, LastRawMessageErrorKind, Stream},
};

pub(crate) async fn last_on(
    stream: &Stream,
    subject: &str,
) -> Result<Option<StreamMessage>, LastRawMessageError> {
    match stream.get_last_raw_message_by_subject(subject).await {
        Ok(message) => Ok(Some(message)),
        Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(None),
        Err(e) => Err(e),
    }
}
