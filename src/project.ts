import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * The project's top folder (the one with package.json), found the same way from `src/` under tsx
 * and from `dist/src/` after a build, so schemas/ and examples/ resolve in both.
 */
export const PROJECT_ROOT: string = (() => {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  while (!existsSync(path.join(dir, 'package.json'))) {
    const up = path.dirname(dir);
    if (up === dir) throw new Error('cannot find the project folder (no package.json above src/)');
    dir = up;
  }
  return dir;
})();
