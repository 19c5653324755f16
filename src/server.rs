//! Runs a process: the HTTP server and the selected roles, with one shutdown token. On
//! shutdown the server stops accepting and drains, the roles finish their current work, the
//! group-commit queue is flushed, and the store is closed.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::app::AppContext;
use crate::roles::{self, Role};

pub struct Running {
    pub addr: SocketAddr,
    pub shutdown: CancellationToken,
    done: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Running {
    /// Waits until the process has stopped (after `shutdown` is cancelled, or a role failed).
    pub async fn wait(self) -> anyhow::Result<()> {
        self.done.await?
    }

    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.wait().await
    }
}

/// Starts the roles and the HTTP server on `listener`.
pub fn start(
    ctx: AppContext,
    roles: Vec<Role>,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> std::io::Result<Running> {
    let addr = listener.local_addr()?;
    let grace = Duration::from_secs(ctx.config.http.shutdown_grace_secs);
    let app = crate::http::router(&ctx, &roles);
    let sd = shutdown.clone();
    let done = tokio::spawn(async move {
        let roles_token = CancellationToken::new();
        let mut set = JoinSet::new();
        for role in roles.iter().copied() {
            let ctx = ctx.clone();
            let tok = roles_token.clone();
            set.spawn(async move { (role, roles::run(role, ctx, tok).await) });
        }
        tracing::info!(%addr, roles = ?roles.iter().map(Role::as_str).collect::<Vec<_>>(), "substrate serving");
        let http = tokio::spawn(crate::http::serve(listener, app, sd.clone(), grace));
        let mut failure: Option<anyhow::Error> = None;
        // Run until shutdown, or until a role stops on its own (which is a failure).
        tokio::select! {
            _ = sd.cancelled() => {}
            Some(res) = set.join_next() => {
                match res {
                    Ok((role, Ok(()))) => failure = Some(anyhow::anyhow!("role {role} stopped unexpectedly")),
                    Ok((role, Err(e))) => failure = Some(e.context(format!("role {role} failed"))),
                    Err(e) => failure = Some(anyhow::anyhow!("role panicked: {e}")),
                }
                sd.cancel();
            }
        }
        tracing::info!("shutting down");
        // Streams never end on their own: close them so the HTTP server can drain.
        ctx.realtime.close();
        match http.await {
            Ok(Err(e)) => tracing::error!(error = %e, "http server error"),
            Err(e) => tracing::error!(error = %e, "http server panicked"),
            Ok(Ok(())) => {}
        }
        roles_token.cancel();
        while let Some(res) = set.join_next().await {
            match res {
                Ok((role, Err(e))) => {
                    tracing::error!(%role, error = %e, "role failed during shutdown")
                }
                Err(e) => tracing::error!(error = %e, "role panicked during shutdown"),
                Ok(_) => {}
            }
        }
        ctx.appender.close().await;
        ctx.store.close().await;
        tracing::info!("stopped");
        match failure {
            Some(e) => Err(e),
            None => Ok(()),
        }
    });
    Ok(Running {
        addr,
        shutdown,
        done,
    })
}

/// Cancels `token` on SIGINT or SIGTERM.
pub fn cancel_on_signals(token: CancellationToken) {
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot listen for SIGTERM");
                        let _ = ctrl_c.await;
                        token.cancel();
                        return;
                    }
                };
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        #[cfg(not(unix))]
        {
            let _ = ctrl_c.await;
        }
        tracing::info!("signal received");
        token.cancel();
    });
}
