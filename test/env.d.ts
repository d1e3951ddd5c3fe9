// Module declarations for test-only imports.
declare module '*?raw' {
  const text: string;
  export default text;
}
