//! `GET /admin/proxies` and `POST /admin/proxies/check`: the egress proxies (their passwords
//! redacted), each with its state, latency, failures and the accounts pinned to it.

use actix_web::{HttpResponse, web};

use crate::startup::AppState;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/proxies", web::get().to(list))
        .route("/proxies/check", web::post().to(check));
}

async fn list(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(state.egress.view())
}

/// Runs every active check now; answers the view after them.
async fn check(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(state.egress.check_now().await)
}
