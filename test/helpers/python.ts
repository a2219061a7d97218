/** Finding a Python with Debian's etcd client modules, for the compatibility tests. */
import { spawnSync } from 'node:child_process';

/** The first python3 that imports every one of `modules`: a python3 of one's own (pyenv) may come first on PATH without Debian's. */
export function findPython(...modules: string[]): string | undefined {
  return ['python3', '/usr/bin/python3'].find((py) => spawnSync(py, ['-c', `import ${modules.join(', ')}`], { stdio: 'ignore' }).status === 0);
}
