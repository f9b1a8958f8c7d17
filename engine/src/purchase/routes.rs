//! The accepting core's side: the two routes, which hand the request over the lane to
//! the owning core and turn its answer into the HTTP response.

use std::rc::Rc;
use std::time::Duration;

use bookbroker_storage::shard_for;
use bytes::Bytes;
use futures_channel::oneshot;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;

use super::ids::{owner_core, shard_of};
use super::lane::{Answer, Job};

use crate::auth::CustomerId;
use crate::cluster::Membership;
use crate::problem::ApiProblem;
use crate::respond::Body;
use crate::state::Core;

/// The HTTP response for an answer from the owning core.
pub(super) fn to_response(a: Answer) -> Response<Body> {
    let mut r = if a.problem {
        let mut r = Response::new(Full::new(Bytes::from(a.body)));
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(ApiProblem::CONTENT_TYPE),
        );
        r
    } else {
        crate::respond::json(StatusCode::OK, a.body)
    };
    *r.status_mut() = StatusCode::from_u16(a.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if a.status == 429 {
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    if let Some(loc) = a.location.and_then(|l| HeaderValue::from_str(&l).ok()) {
        r.headers_mut().insert(header::LOCATION, loc);
    }
    r
}

/// Sends `job` to the core owning `shard` and waits for its answer.
pub(super) async fn over_the_lane(
    core: &Rc<Core>,
    shard: u32,
    job: Job,
    rx: oneshot::Receiver<Answer>,
) -> Response<Body> {
    let owner = owner_core(shard, core.shared.cores);
    // The answer comes back alone, from another core: not worth a coalescing window.
    let _urgent = crate::rt::urgent();
    if core.shared.lanes.send(owner, job).is_err() {
        return crate::respond::problem(&ApiProblem::service_unavailable(
            "the core owning this purchase has stopped; retry shortly",
        ));
    }
    match rx.await {
        Ok(a) => to_response(a),
        Err(_) => crate::respond::problem(&ApiProblem::service_unavailable(
            "the purchase could not be handled; retry with the same key",
        )),
    }
}

/// `POST /v1/purchases` on the accepting core.
pub async fn post(core: &Rc<Core>, req: Request<Incoming>, customer: CustomerId) -> Response<Body> {
    let purchases = &core.purchases;
    let headers = req.headers();
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mime = content_type.split(';').next().unwrap_or("").trim();
    if !mime.eq_ignore_ascii_case("application/json") {
        return crate::respond::problem(&ApiProblem::unsupported_media_type());
    }
    let key = match super::api::check_key(headers.get("idempotency-key").map(|v| v.as_bytes())) {
        Ok(k) => k,
        Err(p) => return crate::respond::problem(&p),
    };
    // Another node's purchase: say whose, before reading the body or starting anything.
    if let Err(p) = Membership::of(&core.shared.config).check_key(&key) {
        return crate::respond::problem(&p);
    }
    let respond_async = super::api::prefers_async(headers.get("prefer").map(|v| v.as_bytes()));
    let limit = core.shared.config.server.max_body_bytes;
    // A body that trickles in must not hold an in-flight slot for ever.
    let body_timeout_ms = core.shared.config.server.body_timeout_ms;
    let read = crate::net::with_timeout(
        Duration::from_millis(body_timeout_ms),
        Limited::new(req.into_body(), limit).collect(),
    )
    .await;
    let Some(read) = read else {
        return crate::respond::problem(&ApiProblem::request_timeout(body_timeout_ms));
    };
    let body = match read {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                return crate::respond::problem(&ApiProblem::payload_too_large(limit));
            }
            return crate::respond::problem(&ApiProblem::bad_request(
                "the request body could not be read",
            ));
        }
    };
    let request = match super::api::parse_body(
        customer.as_str(),
        key,
        &body,
        &core.fx,
        &purchases.cipher,
        respond_async,
    ) {
        Ok(r) => r,
        Err(p) => return crate::respond::problem(&p),
    };
    let shard = shard_for(&request.customer, &request.key, purchases.shard_count);
    let (reply, rx) = oneshot::channel();
    let job = Job::Post {
        request: Box::new(request),
        shard,
        reply,
    };
    over_the_lane(core, shard, job, rx).await
}

/// `GET /v1/purchases/{id}` on the accepting core.
pub async fn get(core: &Rc<Core>, id: &str, customer: CustomerId) -> Response<Body> {
    if let Err(p) = Membership::of(&core.shared.config).check_id(id) {
        return crate::respond::problem(&p);
    }
    let Some(shard) = shard_of(id).filter(|s| *s < core.purchases.shard_count) else {
        return crate::respond::problem(&ApiProblem::not_found());
    };
    let (reply, rx) = oneshot::channel();
    let job = Job::Get {
        id: id.to_string(),
        customer: customer.as_str().to_string(),
        shard,
        reply,
    };
    over_the_lane(core, shard, job, rx).await
}
