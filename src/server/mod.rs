//! `velo-sql server`: the HTTP API (axum) over the engine.
//!
//! - [`config`]: YAML configuration, environment and flag overrides;
//! - [`app`]: SQL application files → job specs;
//! - [`jobs`]: the job manager (run, supervise, stop/pause/resume/restart);
//! - [`capture`]: the sinks behind server queries (job output buffers, ad-hoc results);
//! - [`follow`]: followed responses (heartbeats, ending with the client or the server);
//! - [`logs`]: per-job log buffers fed from tracing;
//! - [`state`]: the server's state folder (kept job definitions, savepoints, export/import);
//! - [`api`]: the routes; [`client`]: the `velo-sql jobs …` side of them.
//!
//! The API is described by `docs/openapi.json` (served at `/openapi.json`); a test checks that
//! every route it lists answers.

pub mod api;
pub mod app;
pub mod capture;
pub mod client;
pub mod config;
pub mod config_keys;
pub mod follow;
pub mod jobs;
pub mod kafka_config;
pub mod logs;
pub mod recent;
pub mod state;

use std::sync::Arc;

use crate::error::{Result, VeloError};
use config::Config;

/// Starts the server with `config` and serves until SIGINT/SIGTERM; then stops every job.
pub async fn serve(config: Config) -> Result<()> {
    config.warn_about_keys_without_effect();
    config.apply_registry_access()?;
    let config = Arc::new(config);
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new()
        .set_buckets(&[
            0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
        ])
        .map_err(|e| VeloError::Execution(format!("metrics: {e}")))?
        .install_recorder()
        .map_err(|e| VeloError::Execution(format!("metrics: {e}")))?;
    let state = api::AppState::new(config.clone(), recorder)?;
    // Jobs deployed before a restart come back, each from its last checkpoint.
    let kept = state.jobs.redeploy_kept()?;
    if !kept.is_empty() {
        tracing::info!(
            "redeployed {} job(s) kept in {}: {}",
            kept.len(),
            config.state_dir().display(),
            kept.join(", ")
        );
    }
    if let Some(file) = &config.sql.file {
        let text = std::fs::read_to_string(file).map_err(|e| {
            VeloError::Usage(format!("cannot read SQL_FILE {}: {e}", file.display()))
        })?;
        let name = file.display().to_string();
        let failed =
            |e: api::ApiError| VeloError::Usage(format!("SQL_FILE {name}: {}", e.describe()));
        let app = state.application(&text, &name).map_err(failed)?;
        // Jobs of the file already back from the state folder keep running from their state.
        let options = jobs::DeployOptions {
            reconcile: true,
            trusted: true,
            ..state.default_deploy()
        };
        state.jobs.reconcile(&app, &options).await;
        let ids = state
            .jobs
            .deploy(&app, &options)
            .map_err(|e| failed(e.into()))?;
        tracing::info!("deployed {} job(s) from {}", ids.len(), file.display());
    }
    let address = format!("{}:{}", config.server.bind, config.server.port);
    let listener = tokio::net::TcpListener::bind(&address)
        .await
        .map_err(|e| VeloError::Usage(format!("cannot listen on {address}: {e}")))?;
    let local = listener.local_addr()?;
    // The first line on stdout says where the server listens (port 0 picks one).
    println!("velo-sql server listening on http://{local}");
    tracing::info!("listening on http://{local}");
    if let Some(port) = config.server.metrics_port {
        let address = format!("{}:{port}", config.server.bind);
        let metrics = tokio::net::TcpListener::bind(&address)
            .await
            .map_err(|e| VeloError::Usage(format!("cannot listen on {address} (metrics): {e}")))?;
        tracing::info!("metrics on http://{}/metrics", metrics.local_addr()?);
        let routes = api::metrics_router(state.clone());
        tokio::spawn(async move {
            if let Err(e) = axum::serve(metrics, routes).await {
                tracing::error!("the metrics listener stopped: {e}");
            }
        });
    }
    let jobs = state.jobs.clone();
    let (fired, stopping) = tokio::sync::oneshot::channel::<()>();
    let ending = state.clone();
    let server = axum::serve(listener, api::router(state)).with_graceful_shutdown(async move {
        shutdown_signal().await;
        // Followers end; a second signal exits at once.
        ending.shut_down();
        let _ = fired.send(());
        tokio::spawn(async {
            shutdown_signal().await;
            eprintln!("second signal: exiting now");
            std::process::exit(130);
        });
    });
    tokio::select! {
        served = server => served?,
        // Connections still open long after the signal do not hold the server up.
        _ = async {
            let _ = stopping.await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } => tracing::warn!(
            "connections still open {} s after the signal: stopping anyway",
            SHUTDOWN_GRACE.as_secs()
        ),
    }
    jobs.stop_all().await;
    Ok(())
}

/// How long a stopping server waits for open connections.
pub const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

pub(crate) async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let (Ok(mut int), Ok(mut term)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) {
            tokio::select! {
                _ = int.recv() => {},
                _ = term.recv() => {},
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
    tracing::info!("stopping: finishing every job's micro-batch");
}
