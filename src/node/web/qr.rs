//! `GET /api/qr?text=T`: a QR code of T as SVG, so that an invite token can be taken to a
//! phone or a second machine's camera without a service outside the network drawing it.

use axum::extract::Query;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::auth::error;

/// The longest text encoded: an invite token with many addresses fits.
const MAX_TEXT: usize = 2048;

#[derive(serde::Deserialize)]
pub struct QrQuery {
    text: String,
}

pub async fn qr(Query(q): Query<QrQuery>) -> Response {
    match svg(&q.text) {
        Ok(svg) => ([(header::CONTENT_TYPE, "image/svg+xml")], svg).into_response(),
        Err(message) => error(StatusCode::BAD_REQUEST, message),
    }
}

/// The QR code of `text`, as an SVG document.
pub fn svg(text: &str) -> Result<String, String> {
    if text.len() > MAX_TEXT {
        return Err(format!("text longer than {MAX_TEXT} bytes"));
    }
    let code = qrcode::QrCode::with_error_correction_level(text.as_bytes(), qrcode::EcLevel::L)
        .map_err(|e| format!("cannot draw it as a QR code: {e}"))?;
    Ok(code
        .render::<qrcode::render::svg::Color<'_>>()
        .min_dimensions(256, 256)
        .quiet_zone(true)
        .build())
}
