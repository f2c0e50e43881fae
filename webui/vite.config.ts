// Vite builds the dashboard into dist/: index.html plus content-hashed files in
// dist/assets/ (the controller serves those with a long Cache-Control). The chart and graph
// libraries get chunks of their own so the benchmark can count app code apart from them.
import { defineConfig } from "vite";

export default defineConfig({
  base: "/",
  build: {
    outDir: "dist",
    emptyOutDir: true,
    target: "es2020",
    sourcemap: false,
    chunkSizeWarningLimit: 1024,
    rollupOptions: {
      output: {
        manualChunks(id: string) {
          if (id.includes("node_modules/uplot")) return "lib-uplot";
          if (id.includes("node_modules/cytoscape")) return "lib-cytoscape";
          return undefined;
        },
      },
    },
  },
  server: {
    // `npm run dev`: the API comes from a running controller (BULKHEAD_API, default :8080).
    proxy: { "/api": process.env.BULKHEAD_API ?? "http://127.0.0.1:8080" },
  },
});
