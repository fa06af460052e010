/** The login page: trades the one-time code in the link's fragment (never sent in a URL) for a session cookie. */
import { render } from 'preact';
import { useEffect, useState } from 'preact/hooks';
import { post } from './api.js';

function Login() {
  const [message, setMessage] = useState('Logging in…');
  useEffect(() => {
    const code = new URLSearchParams(location.hash.slice(1)).get('code');
    history.replaceState(null, '', '/login');
    if (code === null) {
      setMessage('This link has no login code. Run phoenix ui for a new one.');
      return;
    }
    post('/api/login', { code }).then(
      () => location.replace('/'),
      (err: Error) => setMessage(`${err.message}. Run phoenix ui for a new link.`),
    );
  }, []);
  return (
    <main class="login">
      <h1>Phoenix</h1>
      <p id="login-message">{message}</p>
    </main>
  );
}

render(<Login />, document.getElementById('app') as HTMLElement);
