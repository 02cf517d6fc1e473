//! The downstream HTTP server (HTTP/1.1 and h2c) with Envoy's default request limits, so a
//! request Envoy refuses is refused here too.

use super::edge::MAX_REQUEST_HEADERS;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;

pub fn builder() -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // HTTP/1 heads are measured by `edge::prepare`, which can answer with a hint; hyper's
    // read buffer (~400 KiB) bounds what it parses, and a head beyond it or with more than
    // 100 headers (hyper's default and Envoy's `max_headers_count`) gets hyper's own 431.
    // Setting `max_headers` would move hyper's header array to the heap.
    builder.http1().timer(TokioTimer::new());
    // h2 answers a header list over the limit with 431 and resets the stream (Envoy resets
    // it without a response); hyper's own default is 16 KiB.
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(MAX_REQUEST_HEADERS as u32);
    builder
}
