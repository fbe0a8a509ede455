//! Error answers a client can always read. A status message quoting request
//! text (a 10 KB name, a huge patch value) travels in the `grpc-message`
//! header, percent-encoded; past the client's header limit (16 KiB in hyper)
//! the client cannot read the answer at all and sees only "h2 protocol
//! error". This layer cuts long messages (at a character, with `…`) and drops
//! error details too large to send, for every RPC.

use std::pin::Pin;
use std::task::{Context, Poll};

use percent_encoding::{AsciiSet, CONTROLS, percent_decode, utf8_percent_encode};
use tonic::codegen::http::{HeaderValue, Response};
use tonic::codegen::{Service, http};

/// The longest status message sent, in characters.
const MAX_MESSAGE_CHARS: usize = 1024;
/// gRPC's `grpc-message` encoding: bytes outside printable ASCII, and `%`,
/// as `%XX` (`percent-encoding`, the crate tonic encodes it with).
const GRPC_MESSAGE: &AsciiSet = &CONTROLS.add(b'%');
/// The largest `grpc-status-details-bin` (base64) sent; larger ones are dropped.
const MAX_DETAILS_BYTES: usize = 8 * 1024;

#[derive(Clone, Copy)]
pub struct BoundedStatusLayer;

impl<S> tower_layer::Layer<S> for BoundedStatusLayer {
    type Service = BoundedStatus<S>;

    fn layer(&self, inner: S) -> Self::Service {
        BoundedStatus { inner }
    }
}

#[derive(Clone)]
pub struct BoundedStatus<S> {
    inner: S,
}

type BoxFuture<T> = Pin<Box<dyn std::future::Future<Output = T> + Send + 'static>>;

impl<S, B, R> Service<http::Request<B>> for BoundedStatus<S>
where
    S: Service<http::Request<B>, Response = Response<R>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let answer = self.inner.call(request);
        Box::pin(async move {
            let mut response = answer.await?;
            bound(&mut response);
            Ok(response)
        })
    }
}

fn bound<R>(response: &mut Response<R>) {
    let headers = response.headers_mut();
    if headers
        .get("grpc-status-details-bin")
        .is_some_and(|v| v.len() > MAX_DETAILS_BYTES)
    {
        headers.remove("grpc-status-details-bin");
    }
    let Some(message) = headers.get("grpc-message") else {
        return;
    };
    // Percent-encoding at most triples a byte, a character is at most 4 bytes.
    if message.len() <= MAX_MESSAGE_CHARS {
        return;
    }
    let text: String = percent_decode(message.as_bytes())
        .decode_utf8_lossy()
        .into_owned();
    let cut: String = match text.char_indices().nth(MAX_MESSAGE_CHARS) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => return,
    };
    let encoded = utf8_percent_encode(&cut, GRPC_MESSAGE).to_string();
    if let Ok(value) = HeaderValue::from_str(&encoded) {
        headers.insert("grpc-message", value);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn answer(message: &str) -> Response<()> {
        let status = tonic::Status::invalid_argument(message.to_string());
        let mut response = Response::new(());
        status.add_header(response.headers_mut()).unwrap();
        response
    }

    fn message_of(response: &Response<()>) -> String {
        tonic::Status::from_header_map(response.headers())
            .unwrap()
            .message()
            .to_string()
    }

    #[test]
    fn long_messages_are_cut_at_a_character_and_short_ones_left_alone() {
        let mut short = answer("\"x\" is not a name; 100% wrong ü");
        bound(&mut short);
        assert_eq!(message_of(&short), "\"x\" is not a name; 100% wrong ü");

        let long = format!("\"{}\" is not a name", "ü(".repeat(20_000));
        let mut response = answer(&long);
        bound(&mut response);
        let message = message_of(&response);
        assert_eq!(message.chars().count(), MAX_MESSAGE_CHARS + 1);
        assert!(message.starts_with("\"ü(ü("));
        assert!(message.ends_with('…'));
        assert!(response.headers()["grpc-message"].len() < 16 * 1024);
        assert_eq!(
            tonic::Status::from_header_map(response.headers())
                .unwrap()
                .code(),
            tonic::Code::InvalidArgument
        );
    }
}
