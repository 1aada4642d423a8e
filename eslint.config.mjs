// ESLint flat config for the VS Code extension (extension/): typescript-eslint's
// strict, type-checked rules. Python is linted by ruff, not here.
import js from "@eslint/js";
import tseslint from "typescript-eslint";

export default tseslint.config(
  { ignores: ["dist/**", "node_modules/**", ".venv/**", "**/*.js", "**/*.mjs"] },
  js.configs.recommended,
  ...tseslint.configs.strictTypeChecked,
  {
    files: ["extension/**/*.ts"],
    languageOptions: {
      parserOptions: {
        project: "./extension/tsconfig.json",
        tsconfigRootDir: import.meta.dirname,
      },
    },
    rules: {
      "@typescript-eslint/restrict-template-expressions": ["error", { allowNumber: true }],
      "@typescript-eslint/no-floating-promises": "error",
      eqeqeq: "error",
      "no-console": "error",
    },
  },
  {
    files: ["extension/test/**/*.ts"],
    // node:test's test() returns a promise the runner awaits itself
    rules: { "no-console": "off", "@typescript-eslint/no-floating-promises": "off" },
  },
);
