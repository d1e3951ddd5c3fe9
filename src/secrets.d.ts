// Bindings that are secrets (`wrangler secret put NAME`, or `.dev.vars` locally), which
// wrangler.toml does not list and `wrangler types` therefore does not generate.

declare namespace Cloudflare {
  interface Env {
    /** Service API keys, comma-separated; unset or empty: the service routes are open. */
    API_KEYS?: string;
  }
}
interface Env {
  API_KEYS?: string;
}
