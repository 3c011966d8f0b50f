//! The one shutdown signal: SIGINT or SIGTERM, fanned out as a [`CancellationToken`].
//!
//! Owns only the waiting for the signal; what each part does when it fires is that
//! part's business (streams close with 1001, the writer commits its queue).

use tokio_util::sync::CancellationToken;

/// Completes on the first SIGINT (Ctrl-C) or SIGTERM.
pub async fn signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C; only SIGTERM will stop the server");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("SIGINT received; shutting down"),
        () = term => tracing::info!("SIGTERM received; shutting down"),
    }
}

/// Cancels `token` when the process is told to stop.
pub async fn cancel_on_signal(token: CancellationToken) {
    tokio::select! {
        () = signal() => token.cancel(),
        () = token.cancelled() => {}
    }
}
