import { expect } from 'chai';
import { ERROR_CATALOGUE, NoRoomError, translateErrno, UnavailableError } from '../../src/errors.js';
import { schemaNames } from '../../src/schemas.js';

describe('error catalogue', () => {
  it('gives every error class its own code and a 4xx/5xx status', () => {
    const codes = ERROR_CATALOGUE.map((C) => new C('x', {} as never, undefined as never).code);
    expect(new Set(codes).size).to.equal(codes.length);
    for (const C of ERROR_CATALOGUE) expect(new C('x', {} as never, undefined as never).status).to.be.within(400, 599);
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
