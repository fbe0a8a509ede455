//! Error answers a client can always read. A status message quoting request
//! text (a 10 KB name, a huge patch value) travels in the `grpc-message`
//! header, percent-encoded; past the client's header limit (16 KiB in hyper)
//! the client cannot read the answer at all and sees only "h2 protocol
//! error". This layer cuts long messages (at a character, with `…`) and drops
//! error details too large to send, for every RPC.

use std::pin::Pin;
use std::task::{Context, Poll};

use tonic::codegen::http::{HeaderValue, Response};
use tonic::codegen::{Service, http};

/// The longest status message sent, in characters.
const MAX_MESSAGE_CHARS: usize = 1024;
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
    let decoded = percent_decode(message.as_bytes());
    let text = String::from_utf8_lossy(&decoded);
    let cut: String = match text.char_indices().nth(MAX_MESSAGE_CHARS) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => return,
    };
    if let Ok(value) = HeaderValue::from_str(&percent_encode(&cut)) {
        headers.insert("grpc-message", value);
    }
}

/// gRPC's `grpc-message` encoding: bytes outside printable ASCII, and `%`, as `%XX`.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if (0x20..=0x7e).contains(&byte) && byte != b'%' {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

fn percent_decode(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    out
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
