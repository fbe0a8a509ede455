console.log('Timestamp: "' + new Date().toISOString() + '" – Hi, this is automatically triggered script!');
