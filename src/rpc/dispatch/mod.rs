//! Calls in, replies out.
//!
//! [`dispatch`] checks what libvirtd checks before any handler runs
//! (program, version, status, known procedure; then, once the args have
//! decoded, open connection and read-only access), then routes the call.
//! Every handler has the same shape:
//! decoded args in, driver call with plain values, wire ret out; decoding
//! and encoding happen only in [`call`].

mod agent;
mod blockjob;
mod checkpoint;
mod connect;
mod domain;
mod events;
mod jobs;
mod qemu;
mod snapshot;

use std::future::Future;

use bytes::Bytes;

use crate::driver::{DomainRef, DriverError, ErrorKind, ErrorOrigin};
use crate::xdr;

use super::access::refuse_write;
use super::client::Client;
use super::error::{to_remote_error, unsupported, RpcError};
use super::frame::{kind, status, Header};
use super::wire::{self, remote_nonnull_domain, ProcInfo, Procedure};

type Reply = Result<Vec<u8>, DriverError>;

/// Handles one call and returns the reply frame (header and body).
pub async fn dispatch(client: &Client, header: Header, body: Bytes) -> Option<Bytes> {
    // The descriptors themselves were never taken (see FrameReader), so
    // a call that passed some is answered like any other; the count in
    // front of its arguments was checked by the reader.
    let args = match header.kind {
        kind::CALL_WITH_FDS => body.get(4..).unwrap_or_default(),
        _ => &body[..],
    };
    let result = route(client, &header, args).await;
    Some(match result {
        Ok(ret) => header.reply(status::OK).encode(&ret),
        Err(err) => {
            tracing::debug!(client = client.id, proc_ = header.proc_, %err, "call failed");
            match xdr::to_bytes(&to_remote_error(&err)) {
                Ok(body) => header.reply(status::ERROR).encode(&body),
                Err(encode_err) => {
                    tracing::error!(%encode_err, "cannot encode an error reply");
                    return None;
                }
            }
        }
    })
}

/// The checks come in libvirtd's order: program (virnetserver.c), then
/// status and procedure (virnetserverprogram.c), then the args, and only
/// then whether this connection may make the call (libvirtd's handlers
/// and the public API check that), so each bad call gets libvirtd's error.
async fn route(client: &Client, header: &Header, body: &[u8]) -> Reply {
    let info = match (header.prog, header.vers) {
        (wire::REMOTE_PROGRAM, wire::REMOTE_PROTOCOL_VERSION) => {
            wire::remote_proc_info(header.proc_)
        }
        (wire::QEMU_PROGRAM, wire::QEMU_PROTOCOL_VERSION) => wire::qemu_proc_info(header.proc_),
        (prog, vers) => return Err(RpcError::UnknownProgram { prog, vers }.to_driver_error()),
    };
    if header.status != status::OK {
        return Err(RpcError::UnexpectedStatus(header.status).to_driver_error());
    }
    let info = info.ok_or_else(|| RpcError::UnknownProcedure(header.proc_).to_driver_error())?;
    let req = Request {
        client,
        header,
        info,
        body,
    };
    let reply = if header.prog == wire::QEMU_PROGRAM {
        match agent::route_qemu(client, header.proc_, &req).await {
            Some(reply) => Some(reply),
            None => qemu::route(client, header.proc_, &req).await,
        }
    } else {
        route_remote(client, header.proc_, &req).await
    };
    reply.unwrap_or_else(|| {
        // Args we have no layout for cannot be checked first.
        req.check_access()?;
        Err(not_here(info))
    })
}

async fn route_remote(client: &Client, proc_: i32, req: &Request<'_>) -> Option<Reply> {
    if let Some(reply) = connect::route(client, proc_, req).await {
        return Some(reply);
    }
    if let Some(reply) = events::route(client, proc_, req).await {
        return Some(reply);
    }
    if let Some(reply) = domain::route(client, proc_, req).await {
        return Some(reply);
    }
    if let Some(reply) = agent::route(client, proc_, req).await {
        return Some(reply);
    }
    if let Some(reply) = checkpoint::route(client, proc_, req).await {
        return Some(reply);
    }
    if let Some(reply) = snapshot::route(client, proc_, req).await {
        return Some(reply);
    }
    if let Some(reply) = blockjob::route(client, proc_, req).await {
        return Some(reply);
    }
    jobs::route(client, proc_, req).await
}

/// A call on its way to its handler.
pub(crate) struct Request<'a> {
    client: &'a Client,
    header: &'a Header,
    info: &'static ProcInfo,
    body: &'a [u8],
}

impl Request<'_> {
    fn check_access(&self) -> Result<(), DriverError> {
        if self.client.opened().is_none() && !allowed_before_open(self.header) {
            return Err(not_open());
        }
        if self.info.writes && self.client.is_readonly() {
            return Err(refuse_write(self.info.api.unwrap_or(self.info.name)));
        }
        Ok(())
    }
}

/// Procedures a client may call before CONNECT_OPEN.
fn allowed_before_open(header: &Header) -> bool {
    header.prog == wire::REMOTE_PROGRAM
        && matches!(
            header.proc_,
            wire::REMOTE_PROC_CONNECT_OPEN
                | wire::REMOTE_PROC_AUTH_LIST
                | wire::REMOTE_PROC_CONNECT_SUPPORTS_FEATURE
        )
}

/// libvirtd's remote dispatcher reports it, hence VIR_FROM_RPC.
pub(crate) fn not_open() -> DriverError {
    DriverError::internal("hypervisor connection not open").with_origin(ErrorOrigin::Rpc)
}

fn not_here(info: &ProcInfo) -> DriverError {
    unsupported(info.api.unwrap_or(info.name))
}

/// Decodes the args of `P`, checks the connection may make the call, runs
/// the handler, encodes its ret.
async fn call<P, F, Fut>(req: &Request<'_>, handler: F) -> Reply
where
    P: Procedure,
    F: FnOnce(P::Args) -> Fut,
    Fut: Future<Output = Result<P::Ret, DriverError>>,
{
    let args = xdr::from_payload::<P::Args>(req.body)
        .map_err(|e| RpcError::Decode(e).to_driver_error())?;
    req.check_access()?;
    let ret = handler(args).await?;
    xdr::to_bytes(&ret).map_err(|e| RpcError::Encode(e).to_driver_error())
}

/// Routes `$proc` to the first matching handler, or yields `None`.
///
/// Each handler's future is boxed: unboxed, the future of [`dispatch`]
/// would be as large as the largest handler's (many KiB), and every call,
/// a lookup as much as a backup, would pay for moving it around (it was
/// three quarters of the daemon's instructions per lookup).
macro_rules! routes {
    ($proc:expr, $req:expr, { $($marker:ty => $handler:expr),* $(,)? }) => {{
        use $crate::rpc::wire::Procedure as _;
        let proc_ = $proc;
        $(
            if proc_ == <$marker>::PROC {
                return Some(
                    Box::pin($crate::rpc::dispatch::call::<$marker, _, _>($req, $handler)).await,
                );
            }
        )*
        None
    }};
}
pub(crate) use routes;

pub(crate) fn dom_ref(dom: remote_nonnull_domain) -> DomainRef {
    DomainRef {
        name: dom.name,
        uuid: dom.uuid,
        id: dom.id,
    }
}

pub(crate) fn wire_dom(dom: DomainRef) -> remote_nonnull_domain {
    remote_nonnull_domain {
        name: dom.name,
        uuid: dom.uuid,
        id: dom.id,
    }
}

/// A list the protocol bounds (checkpoints, snapshots), and how
/// libvirtd's generated dispatcher refuses a longer one: "Too many WHAT
/// 'N' for limit 'MAX'", with an error code that differs between them.
pub(crate) struct ListLimit {
    pub what: &'static str,
    pub max: u32,
    pub kind: ErrorKind,
}

impl ListLimit {
    /// Refuses `n` entries beyond the limit.
    pub fn check(&self, n: usize) -> Result<(), DriverError> {
        if n <= self.max as usize {
            return Ok(());
        }
        Err(DriverError::new(
            self.kind,
            format!("Too many {} '{n}' for limit '{}'", self.what, self.max),
        ))
    }
}

/// The list and count of a LIST_ALL reply, each entry as `wire` puts it:
/// with `need_results` 0 the list stays empty and only the count is sent.
pub(crate) fn results<T, W>(
    list: Vec<T>,
    need_results: i32,
    limit: &ListLimit,
    wire: impl Fn(T) -> W,
) -> Result<(Vec<W>, i32), DriverError> {
    limit.check(list.len())?;
    let count = i32::try_from(list.len()).unwrap_or(i32::MAX);
    let list = if need_results != 0 {
        list.into_iter().map(wire).collect()
    } else {
        Vec::new()
    };
    Ok((list, count))
}

/// libvirt's C `int` booleans.
pub(crate) fn int_bool(value: bool) -> i32 {
    i32::from(value)
}
