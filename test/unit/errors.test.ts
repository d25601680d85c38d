import { expect } from 'chai';
import express from 'express';
import supertest from 'supertest';
import { errorHandler } from '../../src/api/errors.js';
import { createLogger } from '../../src/log.js';
import { codeForStatus, ERROR_CATALOGUE, NoRoomError, ToolError, translateErrno, UnavailableError } from '../../src/errors.js';
import { schemaNames } from '../../src/schemas.js';

describe('error catalogue', () => {
  it('gives every error class its own code and a 4xx/5xx status', () => {
    const codes = ERROR_CATALOGUE.map((C) => new C('x', {} as never, undefined as never).code);
    expect(new Set(codes).size).to.equal(codes.length);
    for (const C of ERROR_CATALOGUE) expect(new C('x', {} as never, undefined as never).status).to.be.within(400, 599);
  });

  it("names another component's status with the catalogue's code (tus's 409, 412, 460)", () => {
    expect([400, 404, 409, 412, 460, 503, 500].map(codeForStatus)).to.deep.equal(['bad_request', 'not_found', 'conflict', 'precondition_failed', 'bad_request', 'unavailable', 'internal']);
  });

  it('translates a full or broken filesystem where it happens', () => {
    expect(translateErrno(Object.assign(new Error('x'), { code: 'ENOSPC' }), 'v')).to.be.instanceOf(NoRoomError);
    expect(translateErrno(Object.assign(new Error('x'), { code: 'EIO' }), 'v')).to.be.instanceOf(UnavailableError);
    const other = new Error('other');
    expect(translateErrno(other, 'v')).to.equal(other);
  });

  it('compiles every schema in schemas/ at start', () => {
    expect(schemaNames()).to.include.members(['create', 'settings', 'meta', 'config', 'update', 'resize', 'convert']);
  });
});

describe('errors of tools that hit the filesystem limits', () => {
  const tool = (output: string) => new ToolError('qemu-img failed', output, 1);
  for (const [output, message] of [
    ['qemu-img: x.img: Could not resize file: File too large', 'the filesystem cannot hold a file as large as the new volume'],
    ["qemu-img: x.img: The image size is too large for file format 'raw'", 'the filesystem cannot hold a file as large as the new volume'],
    ['qemu-img: error while writing at byte 0: No space left on device', 'no room left on the filesystem for the new volume'],
    ['qemu-img: Disk quota exceeded', 'no room left on the filesystem for the new volume'],
  ])
    it(`reads "${output}" as no room (507)`, () => {
      const err = translateErrno(tool(output), 'the new volume');
      expect(err).to.be.instanceOf(NoRoomError);
      expect((err as NoRoomError).message).to.equal(message);
    });

  it('leaves any other tool failure as it is', () => {
    const err = tool('qemu-img: Image is corrupt');
    expect(translateErrno(err, 'v')).to.equal(err);
  });
});

describe('the error middleware (src/api/errors.ts)', () => {
  it('answers an unexpected error 500 saying only where to look: nothing of its message (paths, system errors) leaves', async () => {
    const app = express();
    app.use((_req, res, next) => {
      res.locals.requestId = 'r-1';
      next();
    });
    app.get('/boom', () => {
      throw new Error("permission denied, open '/mnt/a/vid.0123/meta.json'");
    });
    app.use(errorHandler(createLogger({ level: 'silent', format: 'json' })));
    const res = await supertest(app).get('/boom').expect(500);
    expect(res.body).to.deep.equal({ error: "internal error; the daemon's log has the details (request r-1)", code: 'internal', request: 'r-1' });
  });
});
