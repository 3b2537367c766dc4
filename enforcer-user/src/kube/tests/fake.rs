//! A fake Kubernetes API server speaking the list/watch protocol closely enough for
//! kube-rs, so that the source is tested through the real client.
//!
//! - `GET <collection>[?limit=N][&continue=T][&fieldSelector=S]`: a `*List` with
//!   `metadata.resourceVersion` (the store's current version) and pagination: the first
//!   page snapshots the result, `continue` tokens page through that snapshot (as the API
//!   server lists at one resourceVersion), and an expired token answers 410.
//! - `GET <collection>?watch=true&resourceVersion=R[&allowWatchBookmarks=true]
//!   [&fieldSelector=S]`: a chunked stream of newline-delimited watch events, replaying
//!   every change after R from the history, then live ones. A version older than the
//!   compacted history gets a 410 `ERROR` event (HTTP 200), as the API server's watch
//!   cache answers. Field selectors apply per event like the API server's: an object that
//!   stops matching is sent as DELETED, one that starts matching as ADDED.
//!   `sendInitialEvents` (streaming lists) is refused with 400: kube's watcher does not
//!   use it unless asked to.
//! - Controls for tests: `BOOKMARK` events, holding events back, expiring a watch (410),
//!   ending or breaking streams mid-line, scripted HTTP errors (with `Retry-After`), a
//!   resource that is not installed (404), and a log of every request.
//!
//! Every collection shares one resourceVersion counter, as etcd does.

use std::{
    collections::{BTreeMap, HashMap},
    convert::Infallible,
    io,
    net::SocketAddr,
    sync::{Arc, Mutex, MutexGuard},
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::{
    Request as HttpRequest, Response, StatusCode, body::Frame, body::Incoming, service::service_fn,
};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::{net::TcpListener, sync::mpsc, task::JoinHandle};

/// The collections the source watches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum R {
    Pods,
    Namespaces,
    NetworkPolicies,
    RuntimePolicies,
    Services,
    EndpointSlices,
    DaemonSets,
}

impl R {
    pub const ALL: [R; 7] = [
        R::Pods,
        R::Namespaces,
        R::NetworkPolicies,
        R::RuntimePolicies,
        R::Services,
        R::EndpointSlices,
        R::DaemonSets,
    ];

    pub fn path(self) -> &'static str {
        match self {
            R::Pods => "/api/v1/pods",
            R::Namespaces => "/api/v1/namespaces",
            R::NetworkPolicies => "/apis/networking.k8s.io/v1/networkpolicies",
            R::RuntimePolicies => "/apis/enforcer.dev/v1alpha1/runtimepolicies",
            R::Services => "/api/v1/services",
            R::EndpointSlices => "/apis/discovery.k8s.io/v1/endpointslices",
            R::DaemonSets => "/apis/apps/v1/daemonsets",
        }
    }

    fn api_version(self) -> &'static str {
        match self {
            R::Pods | R::Namespaces | R::Services => "v1",
            R::NetworkPolicies => "networking.k8s.io/v1",
            R::RuntimePolicies => "enforcer.dev/v1alpha1",
            R::EndpointSlices => "discovery.k8s.io/v1",
            R::DaemonSets => "apps/v1",
        }
    }

    fn kind(self) -> &'static str {
        match self {
            R::Pods => "Pod",
            R::Namespaces => "Namespace",
            R::NetworkPolicies => "NetworkPolicy",
            R::RuntimePolicies => "RuntimePolicy",
            R::Services => "Service",
            R::EndpointSlices => "EndpointSlice",
            R::DaemonSets => "DaemonSet",
        }
    }
}

/// A request as the server saw it.
#[derive(Clone, Debug)]
pub struct Request {
    pub resource: Option<R>,
    pub path: String,
    pub query: BTreeMap<String, String>,
}

impl Request {
    pub fn is_watch(&self) -> bool {
        matches!(
            self.query.get("watch").map(String::as_str),
            Some("true" | "1")
        )
    }

    pub fn param(&self, k: &str) -> Option<&str> {
        self.query.get(k).map(String::as_str)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verb {
    List,
    Watch,
}

/// An HTTP error answered instead of the real response.
#[derive(Clone, Debug)]
pub struct Fault {
    pub resource: R,
    pub verb: Verb,
    pub code: u16,
    pub retry_after: Option<u32>,
    /// How many requests get it; `None`: until [`FakeApi::clear_faults`].
    pub times: Option<usize>,
    /// Only list requests that carry a `continue` token.
    pub only_continue: bool,
}

impl Fault {
    pub fn new(resource: R, verb: Verb, code: u16) -> Self {
        Self {
            resource,
            verb,
            code,
            retry_after: None,
            times: None,
            only_continue: false,
        }
    }

    pub fn times(mut self, n: usize) -> Self {
        self.times = Some(n);
        self
    }
}

type Body = BoxBody<Bytes, io::Error>;
type Line = Result<Frame<Bytes>, io::Error>;

/// A field selector term: `field=value`, `field==value` or `field!=value`.
#[derive(Clone, Debug)]
struct Term {
    field: String,
    equal: bool,
    value: String,
}

fn field_value<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    let path: &[&str] = match field {
        "spec.nodeName" => &["spec", "nodeName"],
        "metadata.name" => &["metadata", "name"],
        "metadata.namespace" => &["metadata", "namespace"],
        _ => return None,
    };
    let mut v = obj;
    for p in path {
        v = v.get(p)?;
    }
    v.as_str()
}

fn parse_selector(s: &str) -> Result<Vec<Term>, String> {
    s.split(',')
        .filter(|t| !t.is_empty())
        .map(|t| {
            let (field, equal, value) = if let Some((f, v)) = t.split_once("!=") {
                (f, false, v)
            } else if let Some((f, v)) = t.split_once("==") {
                (f, true, v)
            } else if let Some((f, v)) = t.split_once('=') {
                (f, true, v)
            } else {
                return Err(format!("invalid field selector term {t:?}"));
            };
            if !matches!(
                field,
                "spec.nodeName" | "metadata.name" | "metadata.namespace"
            ) {
                return Err(format!("field label not supported: {field}"));
            }
            Ok(Term {
                field: field.to_string(),
                equal,
                value: value.to_string(),
            })
        })
        .collect()
}

fn matches(sel: &[Term], obj: &Value) -> bool {
    sel.iter()
        .all(|t| (field_value(obj, &t.field).unwrap_or("") == t.value) == t.equal)
}

fn with_rv(obj: &Value, rv: u64) -> Value {
    let mut o = obj.clone();
    o["metadata"]["resourceVersion"] = json!(rv.to_string());
    o
}

fn line(kind: &str, object: &Value) -> Bytes {
    let mut s = serde_json::to_string(&json!({"type": kind, "object": object})).unwrap();
    s.push('\n');
    Bytes::from(s)
}

fn status_json(code: u16, reason: &str, message: &str) -> Value {
    json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": reason, "code": code,
    })
}

/// One change, as recorded in the history.
struct Change {
    rv: u64,
    old: Option<Value>,
    new: Option<Value>,
}

impl Change {
    /// The event a watcher with `sel` gets for it, if any.
    fn event(&self, sel: &[Term]) -> Option<Bytes> {
        match (&self.old, &self.new) {
            (None, Some(n)) => matches(sel, n).then(|| line("ADDED", n)),
            (Some(o), Some(n)) => match (matches(sel, o), matches(sel, n)) {
                (true, true) => Some(line("MODIFIED", n)),
                (false, true) => Some(line("ADDED", n)),
                (true, false) => Some(line("DELETED", &with_rv(o, self.rv))),
                (false, false) => None,
            },
            (Some(o), None) => matches(sel, o).then(|| line("DELETED", &with_rv(o, self.rv))),
            (None, None) => None,
        }
    }
}

struct Watcher {
    tx: mpsc::UnboundedSender<Line>,
    selector: Vec<Term>,
    bookmarks: bool,
}

struct Collection {
    installed: bool,
    objects: BTreeMap<(String, String), Value>,
    history: Vec<Change>,
    /// Watches from a version older than this get 410.
    compacted: u64,
    /// Live events are recorded but not delivered.
    held: bool,
    watchers: Vec<Watcher>,
}

impl Collection {
    fn new() -> Self {
        Self {
            installed: true,
            objects: BTreeMap::new(),
            history: Vec::new(),
            compacted: 0,
            held: false,
            watchers: Vec::new(),
        }
    }
}

/// A page snapshot behind a `continue` token.
struct Pages {
    rv: u64,
    items: Vec<Value>,
}

struct Inner {
    rv: u64,
    collections: BTreeMap<R, Collection>,
    requests: Vec<Request>,
    faults: Vec<Fault>,
    pages: HashMap<u64, Pages>,
    next_pages: u64,
}

impl Inner {
    fn record(&mut self, r: R, old: Option<Value>, new: Option<Value>) -> u64 {
        self.rv += 1;
        let rv = self.rv;
        let c = self.collections.get_mut(&r).expect("collection");
        let change = Change { rv, old, new };
        if !c.held {
            c.watchers.retain(|w| match change.event(&w.selector) {
                Some(l) => w.tx.send(Ok(Frame::data(l))).is_ok(),
                None => !w.tx.is_closed(),
            });
        }
        c.history.push(change);
        rv
    }
}

pub struct FakeApi {
    pub addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
    server: JoinHandle<()>,
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn key_of(obj: &Value) -> (String, String) {
    let m = &obj["metadata"];
    (
        m["namespace"].as_str().unwrap_or("").to_string(),
        m["name"].as_str().expect("metadata.name").to_string(),
    )
}

impl FakeApi {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let inner = Arc::new(Mutex::new(Inner {
            rv: 100,
            collections: R::ALL.iter().map(|r| (*r, Collection::new())).collect(),
            requests: Vec::new(),
            faults: Vec::new(),
            pages: HashMap::new(),
            next_pages: 1,
        }));
        let state = inner.clone();
        let server = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let state = state.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(handle(&state, req)) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Self {
            addr,
            inner,
            server,
        }
    }

    /// A real kube client for this server.
    pub fn client(&self) -> ::kube::Client {
        let url = format!("http://{}", self.addr).parse().unwrap();
        ::kube::Client::try_from(::kube::Config::new(url)).unwrap()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The current resourceVersion.
    pub fn rv(&self) -> u64 {
        self.lock().rv
    }

    /// Create or replace an object (its apiVersion and kind are filled in).
    pub fn put(&self, r: R, mut obj: Value) -> u64 {
        obj["apiVersion"] = json!(r.api_version());
        obj["kind"] = json!(r.kind());
        let key = key_of(&obj);
        let mut inner = self.lock();
        let rv = inner.rv + 1;
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        let c = inner.collections.get_mut(&r).unwrap();
        let old = c.objects.insert(key, obj.clone());
        inner.record(r, old, Some(obj))
    }

    /// Delete an object; false if there was none.
    pub fn delete(&self, r: R, namespace: &str, name: &str) -> bool {
        let mut inner = self.lock();
        let c = inner.collections.get_mut(&r).unwrap();
        let Some(old) = c.objects.remove(&(namespace.to_string(), name.to_string())) else {
            return false;
        };
        inner.record(r, Some(old), None);
        true
    }

    /// Install or remove a resource (a CRD). Removing it deletes its objects (with DELETED
    /// events, as the API server does), closes its watches and answers 404 from then on.
    pub fn set_installed(&self, r: R, installed: bool) {
        let mut inner = self.lock();
        if !installed {
            let keys: Vec<_> = inner.collections[&r].objects.keys().cloned().collect();
            for k in keys {
                let old = inner.collections.get_mut(&r).unwrap().objects.remove(&k);
                inner.record(r, old, None);
            }
        }
        let c = inner.collections.get_mut(&r).unwrap();
        c.installed = installed;
        if !installed {
            c.watchers.clear();
        }
    }

    /// Stop delivering live events (they are still recorded).
    pub fn hold(&self, r: R) {
        self.lock().collections.get_mut(&r).unwrap().held = true;
    }

    /// Forget the history: watches resuming from before now get 410.
    pub fn compact(&self, r: R) {
        let mut inner = self.lock();
        let rv = inner.rv;
        let c = inner.collections.get_mut(&r).unwrap();
        c.compacted = rv;
        c.history.clear();
    }

    /// Expire the live watches: history compacted, a 410 `ERROR` event, end of stream.
    pub fn expire(&self, r: R) {
        self.compact(r);
        let mut inner = self.lock();
        let rv = inner.rv;
        let c = inner.collections.get_mut(&r).unwrap();
        c.held = false;
        let status = status_json(
            410,
            "Expired",
            &format!("too old resource version: 1 ({rv})"),
        );
        for w in c.watchers.drain(..) {
            let _ = w.tx.send(Ok(Frame::data(line("ERROR", &status))));
        }
    }

    /// A BOOKMARK at the current version to the watches that asked for bookmarks.
    pub fn bookmark(&self, r: R) {
        let mut inner = self.lock();
        let rv = inner.rv;
        let c = inner.collections.get_mut(&r).unwrap();
        let object = json!({
            "kind": r.kind(), "apiVersion": r.api_version(),
            "metadata": {"resourceVersion": rv.to_string()},
        });
        c.watchers.retain(|w| {
            !w.bookmarks
                || w.tx
                    .send(Ok(Frame::data(line("BOOKMARK", &object))))
                    .is_ok()
        });
    }

    /// End the live watch streams cleanly (as `timeoutSeconds` does).
    pub fn end_watches(&self, r: R) {
        self.lock()
            .collections
            .get_mut(&r)
            .unwrap()
            .watchers
            .clear();
    }

    /// Break the live watch streams: half an event line, then the connection is cut.
    pub fn break_watches(&self, r: R) {
        let mut inner = self.lock();
        let c = inner.collections.get_mut(&r).unwrap();
        for w in c.watchers.drain(..) {
            let _ = w.tx.send(Ok(Frame::data(Bytes::from_static(
                b"{\"type\":\"MODIFIED\",\"obj",
            ))));
            let _ = w.tx.send(Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "broken on purpose",
            )));
        }
    }

    /// Live watch streams of a collection.
    pub fn watchers(&self, r: R) -> usize {
        let mut inner = self.lock();
        let c = inner.collections.get_mut(&r).unwrap();
        c.watchers.retain(|w| !w.tx.is_closed());
        c.watchers.len()
    }

    pub fn fault(&self, f: Fault) {
        self.lock().faults.push(f);
    }

    pub fn clear_faults(&self) {
        self.lock().faults.clear();
    }

    pub fn requests(&self) -> Vec<Request> {
        self.lock().requests.clone()
    }

    /// Requests for `r` of one verb.
    pub fn requests_for(&self, r: R, verb: Verb) -> Vec<Request> {
        self.requests()
            .into_iter()
            .filter(|q| q.resource == Some(r) && q.is_watch() == (verb == Verb::Watch))
            .collect()
    }
}

fn full(status: StatusCode, body: Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(
            Full::new(Bytes::from(body.to_string()))
                .map_err(|e| match e {})
                .boxed(),
        )
        .unwrap()
}

fn error(code: u16, reason: &str, message: &str) -> Response<Body> {
    full(
        StatusCode::from_u16(code).unwrap(),
        status_json(code, reason, message),
    )
}

fn reason(code: u16) -> &'static str {
    match code {
        400 => "BadRequest",
        404 => "NotFound",
        410 => "Expired",
        429 => "TooManyRequests",
        500 => "InternalError",
        503 => "ServiceUnavailable",
        _ => "Unknown",
    }
}

/// The collection a path names, with the namespace and the object name when it names
/// them: `/api/v1/pods`, `/api/v1/namespaces/NS/pods[/NAME]`, `/api/v1/namespaces/NAME`.
fn route(path: &str) -> Option<(R, Option<String>, Option<String>)> {
    for r in R::ALL {
        if r.path() == path {
            return Some((r, None, None));
        }
        let (prefix, plural) = r.path().rsplit_once('/').unwrap();
        let Some(rest) = path.strip_prefix(&format!("{prefix}/namespaces/")) else {
            continue;
        };
        let parts: Vec<&str> = rest.split('/').collect();
        match (r, parts.as_slice()) {
            (R::Namespaces, [name]) => return Some((r, None, Some(name.to_string()))),
            (_, [ns, p]) if *p == plural => return Some((r, Some(ns.to_string()), None)),
            (_, [ns, p, name]) if *p == plural => {
                return Some((r, Some(ns.to_string()), Some(name.to_string())));
            }
            _ => {}
        }
    }
    None
}

fn handle(state: &Mutex<Inner>, req: HttpRequest<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_string();
    let query: BTreeMap<String, String> = form_urlencoded(req.uri().query().unwrap_or_default());
    let routed = route(&path);
    let resource = routed.as_ref().map(|(r, _, _)| *r);
    let request = Request {
        resource,
        path,
        query,
    };
    let mut inner = state.lock().unwrap_or_else(|e| e.into_inner());
    inner.requests.push(request.clone());
    let Some(r) = resource else {
        return error(
            404,
            "NotFound",
            "the server could not find the requested resource",
        );
    };
    if !inner.collections[&r].installed {
        return error(
            404,
            "NotFound",
            "the server could not find the requested resource",
        );
    }
    let verb = if request.is_watch() {
        Verb::Watch
    } else {
        Verb::List
    };
    let has_continue = request.param("continue").is_some();
    if let Some(i) = inner
        .faults
        .iter()
        .position(|f| f.resource == r && f.verb == verb && (!f.only_continue || has_continue))
    {
        let f = inner.faults[i].clone();
        match f.times {
            Some(n) if n <= 1 => {
                inner.faults.remove(i);
            }
            Some(n) => inner.faults[i].times = Some(n - 1),
            None => {}
        }
        let mut resp = error(f.code, reason(f.code), "injected by the test");
        if let Some(s) = f.retry_after {
            resp.headers_mut()
                .insert("retry-after", s.to_string().parse().unwrap());
        }
        return resp;
    }
    let mut selector = match parse_selector(request.param("fieldSelector").unwrap_or("")) {
        Ok(s) => s,
        Err(e) => return error(400, "BadRequest", &e),
    };
    let (_, namespace, name) = routed.unwrap();
    if let Some(ns) = namespace.clone() {
        selector.push(Term {
            field: "metadata.namespace".into(),
            equal: true,
            value: ns,
        });
    }
    if let Some(name) = name {
        let key = (namespace.unwrap_or_default(), name);
        return match inner.collections[&r].objects.get(&key) {
            Some(o) => full(StatusCode::OK, o.clone()),
            None => error(
                404,
                "NotFound",
                &format!("{} {:?} not found", r.kind(), key.1),
            ),
        };
    }
    match verb {
        Verb::List => list(&mut inner, r, &request, &selector),
        Verb::Watch => watch(&mut inner, r, &request, selector),
    }
}

fn list(inner: &mut Inner, r: R, req: &Request, selector: &[Term]) -> Response<Body> {
    let limit: usize = req
        .param("limit")
        .and_then(|l| l.parse().ok())
        .filter(|l| *l > 0)
        .unwrap_or(usize::MAX);
    let (id, offset) = match req.param("continue") {
        Some(token) => {
            let parsed = token
                .split_once(':')
                .and_then(|(a, b)| Some((a.parse::<u64>().ok()?, b.parse::<usize>().ok()?)));
            match parsed {
                Some((id, offset)) if inner.pages.contains_key(&id) => (id, offset),
                _ => {
                    return error(
                        410,
                        "Expired",
                        "The provided continue parameter is too old to display a consistent \
                         list result. You can start a new list without the continue parameter.",
                    );
                }
            }
        }
        None => {
            let items: Vec<Value> = inner.collections[&r]
                .objects
                .values()
                .filter(|o| matches(selector, o))
                .cloned()
                .collect();
            let id = inner.next_pages;
            inner.next_pages += 1;
            let rv = inner.rv;
            inner.pages.insert(id, Pages { rv, items });
            (id, 0)
        }
    };
    let pages = &inner.pages[&id];
    let end = offset.saturating_add(limit).min(pages.items.len());
    let items = &pages.items[offset..end];
    let mut metadata = json!({"resourceVersion": pages.rv.to_string()});
    if end < pages.items.len() {
        metadata["continue"] = json!(format!("{id}:{end}"));
        metadata["remainingItemCount"] = json!(pages.items.len() - end);
    }
    let body = json!({
        "kind": format!("{}List", r.kind()),
        "apiVersion": r.api_version(),
        "metadata": metadata,
        "items": items,
    });
    if end >= pages.items.len() {
        inner.pages.remove(&id);
    }
    full(StatusCode::OK, body)
}

fn watch(inner: &mut Inner, r: R, req: &Request, selector: Vec<Term>) -> Response<Body> {
    if req.param("sendInitialEvents").is_some() {
        return error(
            400,
            "BadRequest",
            "sendInitialEvents is not supported by this fake",
        );
    }
    let from: Option<u64> = req
        .param("resourceVersion")
        .filter(|v| !v.is_empty() && *v != "0")
        .map(|v| v.parse().expect("numeric resourceVersion"));
    let (tx, mut rx) = mpsc::unbounded_channel::<Line>();
    let c = inner.collections.get_mut(&r).unwrap();
    match from {
        Some(from) if from < c.compacted => {
            let status = status_json(
                410,
                "Expired",
                &format!("too old resource version: {from} ({})", c.compacted),
            );
            let _ = tx.send(Ok(Frame::data(line("ERROR", &status))));
            drop(tx);
        }
        Some(from) => {
            for change in c.history.iter().filter(|ch| ch.rv > from) {
                if let Some(l) = change.event(&selector) {
                    let _ = tx.send(Ok(Frame::data(l)));
                }
            }
            c.watchers.push(Watcher {
                tx,
                selector,
                bookmarks: req.param("allowWatchBookmarks") == Some("true"),
            });
        }
        None => {
            // resourceVersion 0 or absent: synthetic ADDED events for the current state.
            for o in c.objects.values().filter(|o| matches(&selector, o)) {
                let _ = tx.send(Ok(Frame::data(line("ADDED", o))));
            }
            c.watchers.push(Watcher {
                tx,
                selector,
                bookmarks: req.param("allowWatchBookmarks") == Some("true"),
            });
        }
    }
    let stream = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/json")
        .body(BodyExt::boxed(StreamBody::new(stream)))
        .unwrap()
}

/// `a=1&b=x%2Cy` -> {a: "1", b: "x,y"}.
fn form_urlencoded(q: &str) -> BTreeMap<String, String> {
    fn decode(s: &str) -> String {
        let bytes = s.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < bytes.len() => {
                    let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                    match u8::from_str_radix(hex, 16) {
                        Ok(b) => {
                            out.push(b);
                            i += 2;
                        }
                        Err(_) => out.push(b'%'),
                    }
                }
                b => out.push(b),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (decode(k), decode(v)),
            None => (decode(p), String::new()),
        })
        .collect()
}
