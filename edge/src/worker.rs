//! The Cloudflare Worker host.
