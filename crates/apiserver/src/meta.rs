//! Object metadata the server fills in itself: timestamps as `metav1.Time` writes them. A leaf
//! module, so the registry, the kinds and the controllers can share it without importing
//! one another.

/// RFC 3339 in UTC with second precision, as `metav1.Time` serializes.
pub fn now_rfc3339() -> String {
    rfc3339(time::OffsetDateTime::now_utc())
}

pub fn rfc3339(t: time::OffsetDateTime) -> String {
    let t = t.replace_nanosecond(0).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    t.format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}
