// webpack (production mode: minified by terser) with a separate source map, for the
// browser source map test. Usage: node webpack.build.js <entry> <output dir>
const path = require("path");
const webpack = require("webpack");

const [entry, outDir] = process.argv.slice(2);
webpack({
  mode: "production",
  entry: path.resolve(entry),
  devtool: "source-map",
  output: { path: path.resolve(outDir), filename: "app.min.js" },
}, (err, stats) => {
  if (err || stats.hasErrors()) {
    console.error(err || stats.toString("errors-only"));
    process.exit(1);
  }
});
