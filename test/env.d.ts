// Module declarations for test-only imports.
declare module '*?raw' {
  const text: string;
  export default text;
}
// Safetensors fixtures are imported as bytes (a Data module rule in wrangler.toml).
declare module '*.safetensors' {
  const bytes: ArrayBuffer;
  export default bytes;
}
